"""python -m autopilot.report RUN_DIR [RUN_DIR ...]: (re)write report.html."""
import sys

from . import write_report

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m autopilot.report RUN_DIR [RUN_DIR ...]")
    for d in sys.argv[1:]:
        try:
            print(write_report(d))
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            sys.exit(f"error: {e}")
