package report

// Band is a DORA performance band.
type Band string

// The bands, best first.
const (
	Elite  Band = "elite"
	High   Band = "high"
	Medium Band = "medium"
	Low    Band = "low"
)

// The thresholds are those of the software delivery performance clusters
// published in DORA's Accelerate State of DevOps Report 2023 (Google
// Cloud, "How do you compare?" table):
//
//	                        elite          high               medium              low
//	deployment frequency    on demand      daily to weekly    weekly to monthly   less than monthly
//	lead time for changes   < 1 day        1 day to 1 week    1 week to 1 month   more than a month
//	change failure rate     5%             10%                15%                 64%
//	failed deployment
//	  recovery time         < 1 hour       < 1 day            1 day to 1 week     more than a week
//
// "On demand" is read as at least once a day, a month as 30 days; the
// report's change failure rates are cluster centres, read here as upper
// bounds of each band (a rate between two centres gets the worse band).

const (
	secDay   = 24 * 3600.0
	secWeek  = 7 * secDay
	secMonth = 30 * secDay
	secHour  = 3600.0
)

// bandFrequency bands deploys per day.
func bandFrequency(perDay float64) Band {
	switch {
	case perDay >= 1:
		return Elite
	case perDay >= 1.0/7:
		return High
	case perDay >= 1.0/30:
		return Medium
	}
	return Low
}

// bandLeadTime bands a lead time in seconds.
func bandLeadTime(s float64) Band {
	switch {
	case s < secDay:
		return Elite
	case s <= secWeek:
		return High
	case s <= secMonth:
		return Medium
	}
	return Low
}

// bandFailureRate bands a change failure rate (0..1).
func bandFailureRate(r float64) Band {
	switch {
	case r <= 0.05:
		return Elite
	case r <= 0.10:
		return High
	case r <= 0.15:
		return Medium
	}
	return Low
}

// bandRestore bands a time to restore in seconds.
func bandRestore(s float64) Band {
	switch {
	case s < secHour:
		return Elite
	case s < secDay:
		return High
	case s <= secWeek:
		return Medium
	}
	return Low
}
