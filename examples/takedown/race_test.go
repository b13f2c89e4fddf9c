//go:build race

package main

// raceEnabled reports whether the race detector is on: the tests then
// build the example's binary with it too.
const raceEnabled = true
