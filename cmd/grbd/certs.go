package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type certsInitOptions struct {
	configPath string
	dir        string
	days       int
	secret     bool
}

func (o *certsInitOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.dir, "dir", "", "directory for the CA, the certificates and keys (required)")
	fs.IntVar(&o.days, "days", 3650, "validity of the CA and the certificates, in days")
	fs.BoolVar(&o.secret, "secret", false, "also write a random shared secret (DIR/secret)")
}

func newCertsCommand() *cobra.Command {
	return commandGroup("certs", "Create the cluster CA and the members' certificates", newCertsInitCommand())
}

func newCertsInitCommand() *cobra.Command {
	o := &certsInitOptions{}
	cmd := &cobra.Command{
		Use:   "init --config FILE --dir DIR [--secret]",
		Short: "Create a CA for the cluster and a certificate for each member, the CLI and each NBD export",
		Long: `Creates, in DIR, a CA for the cluster of --config (ca.pem, ca-key.pem) and
ECDSA P-256 certificates signed by it: one per member (NAME.pem, NAME-key.pem;
CN and DNS SAN NAME, URI SAN grbd://CLUSTER/NAME), one for the CLI
(admin.pem), one per data node's NBD export (nbd/NAME.pem, for its nbd host)
and one for NBD clients in libnbd's layout (nbd-client/). Keys are written
with mode 0600. Existing files are kept: run it again after adding a member
to issue only the missing certificates with the same CA. Copy each member's
files (and ca.pem) to its host; keep ca-key.pem offline.

Then add to the config (paths relative to the config file or absolute):

  security:
    tls:
      ca: DIR/ca.pem
      cert: DIR/{name}.pem
      key: DIR/{name}-key.pem
  nbd:
    tls:
      cert: DIR/nbd/{name}.pem
      key: DIR/nbd/{name}-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.configPath == "" || o.dir == "" {
				return errors.New("--config and --dir are required")
			}
			if o.days < 1 {
				return errors.New("--days must be at least 1")
			}
			cfg, err := config.Load(o.configPath)
			if err != nil {
				return err
			}
			wrote, err := auth.InitCerts(cfg, o.dir, auth.InitOptions{Validity: time.Duration(o.days) * 24 * time.Hour, Secret: o.secret})
			for _, f := range wrote {
				fmt.Fprintln(cmd.OutOrStdout(), "wrote", f)
			}
			if err != nil {
				return fmt.Errorf("certs init: %w", err)
			}
			if len(wrote) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to do: every file exists")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "libnbd clients: nbds://HOST:PORT/?tls-certificates=%s\n", filepath.Join(o.dir, auth.NBDClientDir))
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
