"""Renders the settings reference (docs/configuration.md) from the settings dataclasses, so the
documentation cannot drift from what the code accepts: `python -m registry.docs > docs/configuration.md`."""

from __future__ import annotations

from .settings import describe


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Settings come from defaults, then the YAML file given with `--config` (or `CARGOBAY_CONFIG`),",
        "then `CARGOBAY_*` environment variables, then command-line flags (`--host`, `--port`, `--root`,",
        "`--workers`). Durations take seconds or a unit: `90`, `30s`, `15m`, `168h`, `7d`.",
        "A wrong value stops `registry serve` at start with one line naming the setting.",
        "List settings take a YAML list (or, as a variable, one comma-separated string); the entries of",
        "`proxy.upstreams` are set in the file only (`proxy.upstreams[].host` is each entry's `host`), and",
        "each upstream's password comes from its `password_file` or `CARGOBAY_PROXY_<HOST>_PASSWORD`.",
        "",
        "| YAML key | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for info in describe():
        default = info.default
        if isinstance(default, bool):
            default = str(default).lower()
        choices = f" One of: {', '.join(info.choices)}." if info.choices else ""
        if isinstance(default, tuple):
            default = ", ".join(default) if default else "(none)"
        env = f"`{info.env}`" if info.env else "—"
        lines.append(f"| `{info.key}` | {env} | `{default}` | {info.help}{choices} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
