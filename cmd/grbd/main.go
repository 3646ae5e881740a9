// Command grbd runs grbd nodes and witnesses and manages a grbd cluster.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "grbd:", err)
		os.Exit(1)
	}
}
