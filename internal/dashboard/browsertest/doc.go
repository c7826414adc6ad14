// Package browsertest drives the web dashboard in a real Chromium with
// chromedp, against a real in-process cluster and real agents: pages
// render with no console error, a running rollout's page follows it
// without a reload, and the controls follow the token's role.
//
// The tests need the build tag browser and a Chromium; make test-browser
// installs Debian's chromium when it is missing (scripts/install-chromium.sh)
// and runs them:
//
//	go test -tags browser ./internal/dashboard/browsertest/
//
// REL_SCREENSHOTS=docs/img writes the README's screenshots from a live
// run (TestScreenshots). REL_CHROMIUM names the browser binary.
package browsertest
