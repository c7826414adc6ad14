package main

import (
	"slices"
	"testing"
	"time"
)

func TestSplitFleet(t *testing.T) {
	for _, tc := range []struct {
		n, per int
		want   []int
	}{
		{1, 10000, []int{1}},
		{10000, 10000, []int{10000}},
		{10001, 10000, []int{5001, 5000}},
		{25000, 10000, []int{8334, 8333, 8333}},
		{10000, 2000, []int{2000, 2000, 2000, 2000, 2000}},
		{20000, 10000, []int{10000, 10000}},
	} {
		got := splitFleet(tc.n, tc.per)
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitFleet(%d, %d) = %v, want %v", tc.n, tc.per, got, tc.want)
		}
		sum := 0
		for _, k := range got {
			if k > tc.per {
				t.Errorf("splitFleet(%d, %d): a process of %d agents, more than %d", tc.n, tc.per, k, tc.per)
			}
			sum += k
		}
		if sum != tc.n {
			t.Errorf("splitFleet(%d, %d) holds %d agents", tc.n, tc.per, sum)
		}
	}
}

func TestFanoutGoal(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
		ok   bool
	}{
		{300, time.Second, true},
		{10000, time.Second, true},
		{10001, 3 * time.Second, true},
		{25000, 3 * time.Second, true},
		{25001, 0, false},
	} {
		got, ok := fanoutGoal(tc.n)
		if got != tc.want || ok != tc.ok {
			t.Errorf("fanoutGoal(%d) = %s, %v; want %s, %v", tc.n, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRangeF(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want string
	}{
		{[]float64{1.234}, "1.23"},
		{[]float64{1.231, 1.229}, "1.23"},
		{[]float64{2.5, 0.75, 1}, "0.75-2.50"},
	} {
		if got := rangeF("%.2f", tc.xs); got != tc.want {
			t.Errorf("rangeF(%v) = %q, want %q", tc.xs, got, tc.want)
		}
	}
}
