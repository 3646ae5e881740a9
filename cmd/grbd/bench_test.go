package main

import (
	"testing"
	"time"

	"github.com/grbd/grbd/bench"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// grbd bench --sustained: fio runs whole seconds, so a run under 1 s (or a
// negative one) is refused rather than run for fio's runtime 0 or ignored.
func TestBenchSustainedFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want time.Duration // cfg.Sustained when accepted
		err  string
	}{
		{"unset", nil, 0, ""},
		{"one second", []string{"--sustained", "1s"}, time.Second, ""},
		{"a minute", []string{"--sustained", "60s"}, time.Minute, ""},
		{"sub-second", []string{"--sustained", "500ms"}, 0, "--sustained: bench: bad config: a sustained run of 500ms is shorter than 1s"},
		{"zero", []string{"--sustained", "0s"}, 0, "shorter than 1s"},
		{"negative", []string{"--sustained", "-5s"}, 0, "a sustained run of -5s is shorter than 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &benchOptions{}
			fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
			o.AddFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			cfg := bench.Suite("grbd", "")
			err := o.apply(fs, &cfg)
			if tc.err != "" {
				require.ErrorIs(t, err, bench.ErrConfig)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, cfg.Sustained)
		})
	}
}
