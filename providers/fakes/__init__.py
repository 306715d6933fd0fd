"""Local fake servers that behave like the real services (see ../shared/providers.md), for tests
and sandbox mode. Each is an aiohttp app started in-process on a loopback port."""
