//go:build !race

package syncbridge_test

const raceEnabled = false
