package main

import (
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/pflag"
)

// clusterOptions are the flags of commands that ask members' admin
// endpoints: which cluster, which member, how long to wait.
type clusterOptions struct {
	configPath string
	name       string
	timeout    time.Duration
}

func (o *clusterOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.name, "name", "", "only this member (default: every member)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for each member to answer")
}

// loadConfig loads the config named by --config.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, errors.New("--config is required")
	}
	return config.Load(path)
}

// members loads the config and returns its members: every data node then
// the witness, or only the member named by --name.
func (o *clusterOptions) members() (*config.Config, []config.Member, error) {
	cfg, err := loadConfig(o.configPath)
	if err != nil {
		return nil, nil, err
	}
	if o.name != "" {
		m, _, err := cfg.Member(o.name)
		if err != nil {
			return nil, nil, err
		}
		return cfg, []config.Member{m}, nil
	}
	members := append([]config.Member(nil), cfg.Nodes...)
	if cfg.Witness != nil {
		members = append(members, *cfg.Witness)
	}
	return cfg, members, nil
}

// adminClient is an HTTP client for admin endpoints that gives up
// connecting after timeout (a host that is down never answers a SYN) but
// lets a stream run as long as it lasts.
func adminClient(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, ResponseHeaderTimeout: timeout}}
}
