"""Memory contents in files beside the Verilog ($readmemh) instead of one `initial` assignment per word.

Amaranth writes a memory's initial contents as `initial begin mem[0] = 4'h3; mem[1] = ...; end`. yosys'
Verilog front end turns every one of those assignments into its own init cell and merges them later, which
takes minutes and gigabytes for the weights of a real network (a 1024x1024 1-bit layer folded to one weight
per cycle is a million assignments), while `$readmemh` gives it one init cell per memory at once. Verilator
reads the file when the simulation starts (from the folder it runs in), so a compiled model does not even
depend on the weights.

`externalize` rewrites Amaranth's output; `referenced_files` is what a tool wrapper copies beside the sources
(and hashes into its cache key); `inline` undoes `externalize` for flows that need one self-contained text.
"""

from __future__ import annotations

import re
from pathlib import Path

# Memories of at least this many bits go to a file; smaller ones (FIFO storage, a few thresholds) stay inline.
MIN_BITS = 1024

_MODULE = re.compile(r"^module\s+(\\\S+|[A-Za-z_][A-Za-z0-9_$]*)")
_MEMORY = re.compile(r"^(\s*)reg \[(\d+):0\] (\\\S+ |[A-Za-z_][A-Za-z0-9_$]*) ?\[(\d+):0\];$")
_INIT = re.compile(r"^\s*(\\\S+ |[A-Za-z_][A-Za-z0-9_$]*) ?\[(\d+)\] = (\d+)'h([0-9a-fA-F]+);$")
_READMEM = re.compile(r'\$readmem[hb]\s*\(\s*"([^"]+)"')
_READMEM_LINE = re.compile(r'^(\s*)initial \$readmemh\("([^"]+)", (\\\S+ |[A-Za-z_][A-Za-z0-9_$]*)\);$')


def _plain(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name.strip().lstrip("\\")).strip("_")


def externalize(text: str, prefix: str, min_bits: int = MIN_BITS) -> tuple[str, dict[str, str]]:
    """Amaranth Verilog -> (the same Verilog with every memory of >= `min_bits` initialized by
    `$readmemh("<prefix>_<module>_<memory>.hex", ...)`, {file name: its text}). Deterministic: file names come
    from the module and memory names, contents are one zero-padded hex word per line, address 0 first. An
    initial block that is not a plain word-by-word list of hex constants for addresses 0..depth-1 is left as
    it is."""
    lines = text.split("\n")
    out: list[str] = []
    files: dict[str, str] = {}
    module = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        found = _MODULE.match(line)
        if found:
            module = found.group(1)
        memory = _MEMORY.match(line)
        if memory and i + 1 < len(lines) and lines[i + 1].strip() == "initial begin":
            width, name, depth = int(memory.group(2)) + 1, memory.group(3), int(memory.group(4)) + 1
            words = []
            j = i + 2
            while j < len(lines) and lines[j].strip() != "end":
                init = _INIT.match(lines[j])
                if not (
                    init
                    and init.group(1).strip() == name.strip()
                    and int(init.group(2)) == len(words)
                    and int(init.group(3)) == width
                ):
                    words = None
                    break
                words.append(init.group(4))
                j += 1
            if words is not None and len(words) == depth and width * depth >= min_bits:
                unit = _plain(module.lstrip("\\").removeprefix(prefix))
                stem = "_".join(part for part in (_plain(prefix), unit, _plain(name)) if part)
                file_name = _unique(stem, files)
                digits = (width + 3) // 4
                files[file_name] = "".join(word.lower().rjust(digits, "0")[-digits:] + "\n" for word in words)
                indent = memory.group(1)
                out += [line, f'{indent}initial $readmemh("{file_name}", {name});']
                i = j + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out), files


def _unique(stem: str, taken: dict[str, str]) -> str:
    name, n = f"{stem}.hex", 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}.hex"
    return name


def referenced_files(verilog_path: Path) -> list[Path]:
    """The files a Verilog source reads with $readmemh / $readmemb, resolved beside it, in order of appearance,
    each once. A name that does not exist there, or that leaves the source's folder (absolute, `..`), is an
    error naming the source: tools run on copies of the sources and their files, laid out the same way."""
    from hardwire.errors import ParameterError

    verilog_path = Path(verilog_path)
    names = dict.fromkeys(_READMEM.findall(verilog_path.read_text(errors="replace")))
    paths = []
    for name in names:
        path = verilog_path.parent / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not path.is_file():
            raise ParameterError(
                "verilog_files",
                str(verilog_path),
                f"Verilog whose $readmemh files lie beside it ({name} is missing there)",
            )
        paths.append(path)
    return paths


def inline(text: str, folder: Path) -> str:
    """Undo `externalize`: every `initial $readmemh("F", mem);` it wrote becomes mem's word-by-word initial
    block again, read from `folder`/F (for flows that need the design as one self-contained text)."""
    widths = {}
    out = []
    for line in text.split("\n"):
        memory = _MEMORY.match(line)
        if memory:
            widths[memory.group(3).strip()] = int(memory.group(2)) + 1
        read = _READMEM_LINE.match(line)
        if read is None:
            out.append(line)
            continue
        indent, file_name, name = read.group(1), read.group(2), read.group(3)
        width = widths[name.strip()]
        words = (Path(folder) / file_name).read_text().split()
        out.append(f"{indent}initial begin")
        out += [f"{indent}  {name}[{address}] = {width}'h{word};" for address, word in enumerate(words)]
        out.append(f"{indent}end")
    return "\n".join(out)
