"""`python -m codebox_kernel -f CONNECTION_FILE` runs the kernel (Jupyter does this, from the kernelspec);
`python -m codebox_kernel install [...]` installs the kernelspec."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from boxlite import BoxliteError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install"]:
        from codebox_kernel.install import main as install

        return install(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m codebox_kernel",
                                     description="The BoxLite Python Jupyter kernel (or: install ...).")
    parser.add_argument("-f", "--connection-file", required=True, help="the connection file Jupyter wrote")
    parser.add_argument("--resource-dir", help="the kernelspec's directory (its metadata has the box settings)")
    parser.add_argument("--image")
    parser.add_argument("--box-name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[BoxLite kernel] %(levelname)s %(message)s")

    from codebox_kernel.kernel import run_kernel
    from codebox_kernel.notebook_box import default_box_name
    from codebox_kernel.settings import load_settings

    try:
        settings = load_settings(args.resource_dir, image=args.image, box_name=args.box_name)
    except BoxliteError as exc:
        print(f"[BoxLite kernel] {exc}", file=sys.stderr)
        return 2
    name = settings.box_name or default_box_name(args.connection_file)
    asyncio.run(run_kernel(args.connection_file, settings, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
