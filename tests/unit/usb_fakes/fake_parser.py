"""Stand-in for `usbguard-rule-parser -f FILE`: echoes INPUT/OUTPUT like the real one and fails on any
non-comment line that does not start with a rule target, or that contains an unbalanced quote."""
import sys

if sys.argv[1:2] == ["-h"]:
    print("Usage: usbguard-rule-parser [OPTIONS] -f <file>")
    sys.exit(0)
with open(sys.argv[2]) as fh:
    for line in fh.read().splitlines():
        print("INPUT: " + line)
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if stripped.split()[0] not in ("allow", "block", "reject") or stripped.count('"') % 2:
                print("! ERROR: RuleParserError", file=sys.stderr)
                sys.exit(1)
            print("OUTPUT: " + stripped)
        else:
            print("OUTPUT: ")
