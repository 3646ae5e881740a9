package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePNG draws the results as a PNG at path: IOPS (top) and p99 latency
// (bottom) per job, one bar per system, on logarithmic axes.
func WritePNG(path string, results []Result, title string) error {
	var buf bytes.Buffer
	if err := renderPNG(&buf, results, title); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// Plot geometry, in inches.
const (
	plotHeight   = 9
	plotMinWidth = 8    // the two panels, without the legend column
	barInch      = 0.12 // width of one bar
	legendInch   = 1.9  // legend column on the right
	yAxisInch    = 0.9  // tick labels and the axis label, approximately
)

func renderPNG(w io.Writer, results []Result, title string) error {
	jobs, systems := jobsOf(results), systemsOf(results)
	if len(jobs) == 0 {
		return fmt.Errorf("bench: plot: no results")
	}
	// One slot per job on the X axis; its bars take 80% of the slot.
	slot := max(float64(len(systems))*barInch/0.8, 1.1)
	width := max(plotMinWidth, slot*float64(len(jobs))+yAxisInch)
	barWidth := vg.Length((width-yAxisInch)/float64(len(jobs))*0.8/float64(len(systems))) * vg.Inch

	iops, err := barPlot(results, jobs, systems, barWidth, "IOPS", func(r Result) float64 { return r.IOPS })
	if err != nil {
		return err
	}
	iops.Title.Text = title
	lat, err := barPlot(results, jobs, systems, barWidth, "p99 completion latency (us)", func(r Result) float64 { return r.P99 })
	if err != nil {
		return err
	}

	// The legend gets a column of its own so it never hides a bar.
	legend := iops.Legend
	legend.Top, legend.Left = true, true
	iops.Legend, lat.Legend = plot.NewLegend(), plot.NewLegend()

	img := vgimg.NewWith(vgimg.UseWH(vg.Length(width+legendInch)*vg.Inch, plotHeight*vg.Inch), vgimg.UseDPI(96))
	dc := draw.New(img)
	panels := draw.Crop(dc, 0, -legendInch*vg.Inch, 0, 0)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{{iops}, {lat}}, tiles, panels)
	iops.Draw(canvases[0][0])
	lat.Draw(canvases[1][0])
	legend.Draw(draw.Crop(dc, vg.Length(width)*vg.Inch+2*vg.Millimeter, 0, 0, -10*vg.Millimeter))
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	return nil
}

// barPlot is one panel: grouped bars, a group per job and a bar per system,
// on a log scale from a decade at least 2x below the smallest value.
func barPlot(results []Result, jobs, systems []string, barWidth vg.Length, ylabel string, value func(Result) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Y.Label.Text = ylabel
	p.Y.Scale = floorLogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), 0.0
	for i, sys := range systems {
		vals := make(plotter.Values, len(jobs))
		for j, job := range jobs {
			if r, ok := find(results, sys, job); ok && value(r) > 0 {
				vals[j] = value(r)
				lo, hi = min(lo, vals[j]), max(hi, vals[j])
			}
		}
		bars, err := plotter.NewBarChart(vals, barWidth)
		if err != nil {
			return nil, fmt.Errorf("bench: plot %s: %w", sys, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = barWidth * vg.Length(float64(i)-float64(len(systems)-1)/2)
		p.Add(bars)
		p.Legend.Add(sys, bars)
	}
	if hi == 0 {
		return nil, fmt.Errorf("bench: plot %s: nothing to draw", ylabel)
	}
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo/2)))
	p.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi*1.05))) // a labelled decade on top
	p.NominalX(jobs...)
	p.X.Min, p.X.Max = -0.5, float64(len(jobs))-0.5
	p.X.Tick.Label.Rotation = 0.25
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YTop
	return p, nil
}

// floorLogScale is a log scale that maps values at or below the axis
// minimum (bars start at 0) to the bottom of the axis instead of panicking.
type floorLogScale struct{}

func (floorLogScale) Normalize(lo, hi, x float64) float64 {
	return plot.LogScale{}.Normalize(lo, hi, max(x, lo))
}
