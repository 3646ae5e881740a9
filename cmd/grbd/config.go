package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newConfigCommand() *cobra.Command {
	return commandGroup("config", "Work with the cluster config file", newConfigCheckCommand())
}

type configCheckOptions struct {
	configPath string
	strict     bool
}

func (o *configCheckOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.BoolVar(&o.strict, "strict", false, "exit non-zero on warnings too")
}

// errConfigInvalid is what `config check` returns after printing the
// problems: the exit status says it, the lines above say why.
var errConfigInvalid = errors.New("config check failed")

func newConfigCheckCommand() *cobra.Command {
	o := &configCheckOptions{}
	cmd := &cobra.Command{
		Use:   "check --config FILE [--strict]",
		Short: "Validate a cluster config: every error and warning, located in the file",
		Long: `Parses and validates FILE as every member would at start. A valid file
prints one summary line, then one line per warning ("FILE:LINE: FIELD:
warning: ..."): layouts where one failure stops the service, endpoints open
to the network, settings that trade safety for speed. An invalid file prints
every error as "FILE:LINE: FIELD: message" and exits 1. With --strict,
warnings fail the check too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(o.configPath)
			if err != nil {
				if !errors.Is(err, config.ErrInvalid) {
					return err
				}
				n := printErrors(cmd.OutOrStdout(), err)
				return fmt.Errorf("%w: %d error%s in %s", errConfigInvalid, n, plural(n), o.configPath)
			}
			warnings := cfg.Warnings()
			fmt.Fprintln(cmd.OutOrStdout(), configSummary(cfg, len(warnings)))
			for _, w := range warnings {
				fmt.Fprintln(cmd.OutOrStdout(), w)
			}
			if o.strict && len(warnings) > 0 {
				return fmt.Errorf("%w: %d warning%s with --strict", errConfigInvalid, len(warnings), plural(len(warnings)))
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// printErrors writes each joined error on its own line and counts them.
func printErrors(w io.Writer, err error) int {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		fmt.Fprintln(w, e)
	}
	return len(errs)
}

// configSummary is the one line `config check` prints for a valid file.
func configSummary(cfg *config.Config, warnings int) string {
	var names []string
	for _, n := range cfg.Nodes {
		names = append(names, n.Name)
	}
	members := fmt.Sprintf("%d data node%s (%s)", len(cfg.Nodes), plural(len(cfg.Nodes)), strings.Join(names, ", "))
	if cfg.Witness != nil {
		members += " + witness (" + cfg.Witness.Name + ")"
	}
	return fmt.Sprintf("%s: ok: cluster %s, %s, device %s, protocol %s, %d warning%s",
		cfg.Path, cfg.Cluster, members, cfg.Device.Size, cfg.Replication.Protocol, warnings, plural(warnings))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
