"""MkDocs hook: the block catalogue page is written from the block registry at build time, so a block's
parameters in the documentation are the ones its dataclass checks, and a new block appears without an edit."""

from __future__ import annotations

import dataclasses
import importlib

MARKER = "<!-- block-catalogue -->"


def _type_name(field) -> str:
    text = str(field.type)
    # a `|` would end the Markdown table cell, even inside backticks
    return text.replace("typing.", "").replace("<class '", "").replace("'>", "").replace(" | ", " or ")


def _default(field) -> str:
    if field.default is not dataclasses.MISSING:
        return "derived" if field.default is None else f"`{field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{field.default_factory()!r}`"
    return "required"


def _intro(block) -> str:
    """The first paragraph of the block's gen/ module docstring: what it is and how it works."""
    module = importlib.import_module(
        block.component.__module__ if hasattr(block.component, "__module__") else block.params.__module__
    )
    doc = (module.__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def catalogue() -> str:
    from hardwire.gen import registry

    lines = []
    for name, block in registry.blocks().items():
        params = block.params()
        lines += [f"## `{name}`", "", block.summary.rstrip(".") + ".", ""]
        intro = _intro(block)
        if intro:
            lines += [intro, ""]
        lines += [
            f"Default configuration: top module `{params.top_name}`; testbench `{block.testbench}`; "
            f"generator version {block.generator_version}.",
            "",
        ]
        if block.error_bound is not None:
            lines += [
                f"Analytic error bound against {block.error_reference}: "
                f"{block.error_bound(params):.3g} output LSB at the defaults.",
                "",
            ]
        lines += ["| parameter | type | default | command-line option |", "|---|---|---|---|"]
        for field in dataclasses.fields(block.params):
            option = "--" + field.name.replace("_", "-")
            if isinstance(field.default, bool):
                option += f"`, `--no-{field.name.replace('_', '-')}"
            lines.append(f"| `{field.name}` | `{_type_name(field)}` | {_default(field)} | `{option}` |")
        lines += [
            "",
            "```python",
            f"hardwire.generate({name!r}, out='out')   # or: hardwire gen {name} -o out",
            "```",
            "",
        ]
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, catalogue())
    return markdown
