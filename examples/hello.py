"""The smallest useful program: boot a box from the built-in image and run Python in it."""

import asyncio

import boxlite


async def main() -> None:
    async with boxlite.SimpleBox(image=boxlite.DEFAULT_IMAGE) as box:
        r = await box.exec("python3", "-c", "import platform; print(6*7, platform.node())")
        print(r.exit_code, r.stdout, r.stderr)
        info = await box.info()
        print(f"box {info.id} ran on {info.engine} ({info.engine_reason}); guest booted in {info.guest_boot_ms} ms")


asyncio.run(main())
