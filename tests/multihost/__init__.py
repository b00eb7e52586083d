"""Multi-host test bed: Debian 12 containers with systemd, and the tests that deploy onto them."""
