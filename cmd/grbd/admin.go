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
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Do(ctx, m, http.MethodPost, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("admin endpoint answered %s", resp.Status)
	}
	return body, nil
}
