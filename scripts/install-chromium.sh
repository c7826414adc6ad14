#!/bin/sh
# install-chromium.sh: make sure a Chromium for the dashboard's browser
# tests (internal/dashboard/browsertest, chromedp) is installed. It does
# nothing when one is found; otherwise it installs Debian's chromium with
# apt-get (as root, or through sudo). It prints the browser's path.
# Exit status 0: a browser is there; 1: none, and it could not install one.
set -eu

find_browser() {
	if [ -n "${REL_CHROMIUM:-}" ] && [ -x "$REL_CHROMIUM" ]; then
		echo "$REL_CHROMIUM"
		return 0
	fi
	for b in chromium chromium-browser google-chrome-stable google-chrome; do
		if p=$(command -v "$b" 2>/dev/null); then
			echo "$p"
			return 0
		fi
	done
	return 1
}

if find_browser; then
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-chromium.sh: no chromium found and no apt-get to install Debian's: install Chromium and set REL_CHROMIUM to its path" >&2
	exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo -n"
	else
		echo "install-chromium.sh: no chromium found; installing it needs root (apt-get install chromium)" >&2
		exit 1
	fi
fi
echo "install-chromium.sh: installing Debian's chromium with apt-get" >&2
$SUDO apt-get update -qq >&2 || true
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2; then
	echo "install-chromium.sh: apt-get install chromium failed" >&2
	exit 1
fi
find_browser
