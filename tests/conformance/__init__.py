"""The HLS conformance checker of the tests (checker.py); its rules are listed in docs/conformance.md."""
