"""``python -m benchmarks.gpu_check``: the GPU check's command line (``report.main``)."""
import sys

from .report import main

if __name__ == "__main__":
    sys.exit(main())
