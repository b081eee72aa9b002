"""Root conftest: the shared fixtures (embedded broker, Redis) for every test folder."""

pytest_plugins = ["adwatch.testing"]
