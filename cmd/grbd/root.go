package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// globalOptions are flags every subcommand shares.
type globalOptions struct {
	logLevel  string
	logFormat string
}

func (o *globalOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
}

// logger builds the structured logger on stderr; stdout stays for results.
func (o *globalOptions) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
}

// commandGroup is a command that only holds subs (it prints its help).
func commandGroup(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	cmd.AddCommand(subs...)
	return cmd
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "grbd",
		Short:         "grbd: a replicated block device exported over NBD",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(newConnectCommands()...)
	root.AddCommand(
		newNodeCommand(g),
		newWitnessCommand(g),
		newLocalCommand(g),
		newStatusCommand(),
		newEventsCommand(),
		newWaitSyncCommand(),
		newAttachCommand(g),
		newProxyCommand(g),
		newDetachCommand(),
		newConfigCommand(),
		newPrimaryCommand(),
		newSecondaryCommand(),
		newResolveCommand(),
		newVerifyCommand(),
		newInvalidateCommand(),
		newResizeCommand(),
		newMemberCommand(),
		newBenchCommand(g),
		newVersionCommand(),
		newCertsCommand(),
	)
	return root
}
