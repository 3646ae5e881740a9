package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/pflag"
)

// clusterOptions are the flags of commands that ask members' admin
// endpoints: which cluster, which member, how long to wait.
type clusterOptions struct {
	configPath string
	name       string
	timeout    time.Duration
	admin      adminOptions
}

func (o *clusterOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.name, "name", "", "only this member (default: every member)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for each member to answer")
	o.admin.AddFlags(fs)
}

// loadClient loads the config named by --config and builds the admin
// client with the command's credentials.
func loadClient(path string, a adminOptions) (*config.Config, *auth.Client, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	cli, err := a.client(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, cli, nil
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

// client is the admin-endpoint client for cfg with the command's
// credentials.
func (o *clusterOptions) client(cfg *config.Config) (*auth.Client, error) { return o.admin.client(cfg) }

// adminOptions are the credentials of commands that talk to admin endpoints.
// The shared secret, when the config names one, is read from its file.
type adminOptions struct {
	cert, key string
}

func (o *adminOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.cert, "cert", "", "client certificate for admin endpoints served over HTTPS (default: admin.pem beside security.tls.ca, if present)")
	fs.StringVar(&o.key, "key", "", "private key of --cert (default: admin-key.pem beside security.tls.ca)")
}

func (o *adminOptions) client(cfg *config.Config) (*auth.Client, error) {
	return auth.NewClient(cfg, o.cert, o.key)
}

// adminPost sends a POST to member m's admin endpoint and returns the body
// of a 200 answer; other answers become errors carrying the endpoint's
// message.
func adminPost(ctx context.Context, cli *auth.Client, m config.Member, path string, timeout time.Duration) ([]byte, error) {
	body, _, err := adminPostStatus(ctx, cli, m, path, timeout)
	return body, err
}

// adminPostStatus is adminPost that also returns the HTTP status of an
// answer that was not 200 (0 when the member did not answer).
func adminPostStatus(ctx context.Context, cli *auth.Client, m config.Member, path string, timeout time.Duration) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Do(ctx, m, http.MethodPost, path)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, resp.StatusCode, errors.New(e.Error)
		}
		return nil, resp.StatusCode, fmt.Errorf("admin endpoint answered %s", resp.Status)
	}
	return body, 0, nil
}
