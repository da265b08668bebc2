import sys
import time

print(f"boxlite-guest: python up at {time.clock_gettime(time.CLOCK_BOOTTIME):.2f}s", file=sys.stderr, flush=True)
from guest.agent import main  # noqa: E402

main()
