"""A streaming XLSX writer for the exports: each row becomes its XML as it is written and waits
in a temporary file, so a national workbook of millions of cells takes seconds and little memory.

It writes what the exports need and nothing more: text (inline), numbers and dates with a number
format, a bold frozen header row, column widths and an autofilter over every written row.

Why not a library: with openpyxl (write-only) a month of 80,000 cooperatives took minutes,
at about 40,000 cells a second on the two-core machine; XlsxWriter in constant_memory mode does
about 75,000 cells a second. Both spend that time in per-cell Python objects and calls; here a
row is one formatted string. The parts written follow what openpyxl and XlsxWriter write for
the same features (ECMA-376, SpreadsheetML), and the tests read every export back with openpyxl.

A big workbook can be kept by a child process instead (`WorkbookProcess`, same methods): the rows
cross a pipe, and the XML and its deflating run on another core than the reading of the rows.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from xml.sax.saxutils import escape, quoteattr

# Control characters typed in a chat are not allowed in XML (the same set openpyxl removes).
ILLEGAL_CHARACTERS = re.compile(r"[\000-\010]|[\013-\014]|[\016-\037]")
_EXCEL_EPOCH = datetime(1899, 12, 30)
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
# Style indexes in styles.xml: 0 normal, 1 bold (headers), then one per number format.
_BOLD = 1
_FIRST_FORMAT_STYLE = 2
_FIRST_CUSTOM_FORMAT = 164  # ids below are Excel's built-in formats
# Distinct texts a sheet remembers escaped (names and labels repeat down a column).
_TEXT_CACHE = 50_000
# Deflate level of the parts: a national month is 190 MB of XML, 2.5 s to deflate at level 6
# (9.2 MiB) and 1 s at level 3 (10.8 MiB), the last thing an export waits for.
COMPRESSION = 3


def column_letter(index: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def serial(moment: datetime | date) -> float:
    """Excel's date serial (days since 1899-12-30); naive wall-clock time is written as is."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    if moment.tzinfo is not None:
        raise ValueError("Excel has no time zones: write the wall-clock time, naive")
    return (moment - _EXCEL_EPOCH).total_seconds() / 86400


class Sheet:
    """One worksheet; `append` its rows in order (values: str, int, float, date, None)."""

    def __init__(
        self,
        title: str,
        headers: Sequence[str],
        widths: Sequence[float],
        styles: Sequence[int],
    ) -> None:
        self.title = title
        self.widths = list(widths)
        self._refs = [column_letter(i) for i in range(1, len(headers) + 1)]
        # Number formats apply to numbers and dates only, as a cell of text needs none.
        self._styles = [f' s="{s}"' if s else "" for s in styles]
        self._data: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by `close`
        self._texts: dict[str, str] = {}
        self._dates: dict[date, str] = {}
        self.rows = 0
        self._write(
            [
                f'<c r="{ref}1" s="{_BOLD}" t="inlineStr"><is><t>{_text(h)}</t></is></c>'
                for ref, h in zip(self._refs, headers, strict=True)
            ],
            1,
        )

    @property
    def last_column(self) -> str:
        return self._refs[-1]

    def _write(self, cells: list[str], number: int) -> None:
        self._data.write(f'<row r="{number}">{"".join(cells)}</row>'.encode())

    def append(self, rows: Iterable[Sequence[Any]]) -> None:
        chunk: list[str] = []
        number = self.rows + 1
        texts = self._texts
        for row in rows:
            number += 1
            cells = []
            # A cell names its place only after an empty one; otherwise it is the next column
            # (the reference is optional in SpreadsheetML, and a third of the bytes).
            gap = False
            for ref, style, value in zip(self._refs, self._styles, row, strict=True):
                if value is None:
                    gap = True
                    continue
                kind = type(value)
                if kind is not str and isinstance(value, str):
                    value, kind = str(value), str  # e.g. markupsafe.Markup: write the text
                if kind is str:
                    if not value:
                        gap = True
                        continue
                    at = f' r="{ref}{number}"' if gap else ""
                    gap = False
                    # Names, codes and labels repeat down a column: escaped once.
                    text = texts.get(value)
                    if text is None:
                        text = _inline(value)
                        if len(texts) < _TEXT_CACHE:
                            texts[value] = text
                    cells.append(f'<c{at} t="inlineStr">{text}</c>')
                    continue
                at = f' r="{ref}{number}"' if gap else ""
                gap = False
                if kind is int or kind is float:
                    cells.append(f"<c{at}{style}><v>{value!r}</v></c>")
                else:
                    cells.append(self._other(at, style, value))
            chunk.append(f'<row r="{number}">{"".join(cells)}</row>')
        self._data.write("".join(chunk).encode())
        self.rows = number - 1

    def _other(self, at: str, style: str, value: Any) -> str:
        if isinstance(value, bool):
            return f'<c{at} t="b"><v>{int(value)}</v></c>'
        if isinstance(value, int | float):
            return f"<c{at}{style}><v>{value!r}</v></c>"
        if isinstance(value, date):
            number = self._dates.get(value)
            if number is None:
                number = self._dates[value] = repr(serial(value))
            return f"<c{at}{style}><v>{number}</v></c>"
        raise TypeError(f"cannot write {type(value).__name__} to a cell")

    @property
    def ref(self) -> str:
        """The range written, header included: "A1:Q7"."""
        return f"A1:{self.last_column}{self.rows + 1}"

    def save_into(self, archive: zipfile.ZipFile, name: str, selected: bool) -> None:
        cols = "".join(
            f'<col min="{i}" max="{i}" width="{w:g}" customWidth="1"/>'
            for i, w in enumerate(self.widths, start=1)
        )
        tab = ' tabSelected="1"' if selected else ""
        head = (
            f'{_HEAD}<worksheet xmlns="{_MAIN}" xmlns:r="{_REL}">'
            f'<dimension ref="{self.ref}"/>'
            f'<sheetViews><sheetView{tab} workbookViewId="0">'
            '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft"'
            ' state="frozen"/><selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
            "</sheetView></sheetViews>"
            '<sheetFormatPr defaultRowHeight="15"/>'
            f"<cols>{cols}</cols><sheetData>"
        )
        tail = (
            f'</sheetData><autoFilter ref="{self.ref}"/>'
            '<pageMargins left="0.75" right="0.75" top="1" bottom="1" header="0.5" footer="0.5"/>'
            "</worksheet>"
        )
        with archive.open(name, "w", force_zip64=True) as out:
            out.write(head.encode())
            self._data.seek(0)
            while block := self._data.read(1 << 20):
                out.write(block)
            out.write(tail.encode())

    def close(self) -> None:
        self._data.close()


def _text(value: str) -> str:
    return escape(ILLEGAL_CHARACTERS.sub("", value))


def _inline(value: str) -> str:
    """An inline string's content; spaces at either end are kept only when asked to."""
    space = ' xml:space="preserve"' if value[0].isspace() or value[-1].isspace() else ""
    return f"<is><t{space}>{_text(value)}</t></is>"


class Rows(Protocol):
    """Where a sheet's rows go: a `Sheet`, or one written by a `WorkbookProcess`."""

    def append(self, rows: Iterable[Sequence[Any]]) -> None: ...


class Book(Protocol):
    """A `Workbook`, or a `WorkbookProcess` that writes one in a child process."""

    def add_sheet(self, title: str, columns: Sequence[tuple[str, float, str | None]]) -> Rows: ...

    def save(self, out: str | os.PathLike[str] | IO[bytes]) -> None: ...

    def close(self) -> None: ...


class Workbook:
    """Sheets in the order added; `save` writes the file (or buffer) and frees the sheets."""

    def __init__(self) -> None:
        self.sheets: list[Sheet] = []
        self._formats: dict[str, int] = {}

    def _style(self, number_format: str | None) -> int:
        if number_format is None:
            return 0
        if number_format not in self._formats:
            self._formats[number_format] = _FIRST_FORMAT_STYLE + len(self._formats)
        return self._formats[number_format]

    def add_sheet(self, title: str, columns: Sequence[tuple[str, float, str | None]]) -> Sheet:
        """A sheet with a header row of `columns` (header, width in characters, number format)."""
        sheet = Sheet(
            title,
            [header for header, _, _ in columns],
            [width for _, width, _ in columns],
            [self._style(number_format) for _, _, number_format in columns],
        )
        self.sheets.append(sheet)
        return sheet

    def close(self) -> None:
        for sheet in self.sheets:
            sheet.close()

    def save(self, out: str | os.PathLike[str] | IO[bytes]) -> None:
        target: Any = Path(out) if isinstance(out, str | os.PathLike) else out
        try:
            with zipfile.ZipFile(
                target, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESSION
            ) as archive:
                archive.writestr("[Content_Types].xml", self._content_types())
                archive.writestr("_rels/.rels", _ROOT_RELS)
                archive.writestr("xl/workbook.xml", self._workbook())
                archive.writestr("xl/_rels/workbook.xml.rels", self._workbook_rels())
                archive.writestr("xl/styles.xml", self._stylesheet())
                for index, sheet in enumerate(self.sheets, start=1):
                    sheet.save_into(archive, f"xl/worksheets/sheet{index}.xml", index == 1)
        finally:
            self.close()

    def _content_types(self) -> str:
        sheets = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for i in range(1, len(self.sheets) + 1)
        )
        return (
            f"{_HEAD}<Types "
            'xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            f"{sheets}</Types>"
        )

    def _workbook(self) -> str:
        sheets = "".join(
            f'<sheet name={quoteattr(s.title)} sheetId="{i}" r:id="rId{i}"/>'
            for i, s in enumerate(self.sheets, start=1)
        )
        # Excel keeps each autofilter's range in a hidden defined name as well.
        names = "".join(
            f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
            f"{escape(_quoted(s.title))}!{_absolute(s.ref)}</definedName>"
            for i, s in enumerate(self.sheets)
        )
        return (
            f'{_HEAD}<workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
            '<bookViews><workbookView activeTab="0"/></bookViews>'
            f"<sheets>{sheets}</sheets><definedNames>{names}</definedNames>"
            '<calcPr calcId="124519" fullCalcOnLoad="1"/></workbook>'
        )

    def _workbook_rels(self) -> str:
        rels = "".join(
            f'<Relationship Id="rId{i}" Type="{_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, len(self.sheets) + 1)
        )
        styles = len(self.sheets) + 1
        return (
            f'{_HEAD}<Relationships xmlns="{_PKG_REL}">{rels}'
            f'<Relationship Id="rId{styles}" Type="{_REL}/styles" Target="styles.xml"/>'
            "</Relationships>"
        )

    def _stylesheet(self) -> str:
        ordered = sorted(self._formats.items(), key=lambda item: item[1])
        formats = "".join(
            f'<numFmt numFmtId="{_FIRST_CUSTOM_FORMAT + n}" formatCode={quoteattr(code)}/>'
            for n, (code, _) in enumerate(ordered)
        )
        xfs = "".join(
            f'<xf numFmtId="{_FIRST_CUSTOM_FORMAT + n}" fontId="0" fillId="0" borderId="0" '
            'xfId="0" applyNumberFormat="1"/>'
            for n in range(len(ordered))
        )
        font = '<sz val="11"/><name val="Calibri"/><family val="2"/><scheme val="minor"/>'
        return (
            f'{_HEAD}<styleSheet xmlns="{_MAIN}">'
            f'<numFmts count="{len(ordered)}">{formats}</numFmts>'
            f'<fonts count="2"><font>{font}</font><font><b/>{font}</font></fonts>'
            '<fills count="2"><fill><patternFill patternType="none"/></fill>'
            '<fill><patternFill patternType="gray125"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border>'
            "</borders>"
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
            "</cellStyleXfs>"
            f'<cellXfs count="{_FIRST_FORMAT_STYLE + len(ordered)}">'
            '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
            f"{xfs}</cellXfs>"
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/>'
            "</cellStyles></styleSheet>"
        )


def _quoted(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"


def _absolute(ref: str) -> str:
    """A1:Q7 -> $A$1:$Q$7"""
    return ":".join(re.sub(r"([A-Z]+)([0-9]+)", r"$\1$\2", part) for part in ref.split(":"))


_ROOT_RELS = (
    f'{_HEAD}<Relationships xmlns="{_PKG_REL}">'
    f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)


# A workbook written by a child process ------------------------------------------------------


class _RemoteSheet:
    def __init__(self, book: WorkbookProcess, index: int) -> None:
        self._book = book
        self._index = index

    def append(self, rows: Iterable[Sequence[Any]]) -> None:
        self._book._send(("append", self._index, list(rows)))


class WorkbookProcess:
    """A `Workbook` kept by a child process (`_serve`): `append` hands the rows over (pickled,
    through a pipe) and the child turns them into XML and deflates them on its own core while
    this process reads and builds the next rows. A national export is two halves of about the
    same size (building the rows, writing them) that one interpreter can only run one after
    the other. Sending waits while the child is one batch behind, so rows do not pile up."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        # The child imports this module only (the standard library), not the bot's settings.
        self._child: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {root!r}); from bot.xlsx import _serve; _serve()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._sheets = 0
        # The child's peak resident memory (MiB), known after `save`.
        self.peak_mib: float | None = None

    def _send(self, message: tuple[Any, ...]) -> None:
        child = self._child
        if child is None or child.stdin is None:
            raise RuntimeError("the workbook is closed")
        try:
            pickle.dump(message, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"the XLSX writer process stopped ({child.poll()})") from None

    def add_sheet(self, title: str, columns: Sequence[tuple[str, float, str | None]]) -> Rows:
        self._send(("sheet", title, list(columns)))
        self._sheets += 1
        return _RemoteSheet(self, self._sheets - 1)

    def save(self, out: str | os.PathLike[str] | IO[bytes]) -> None:
        try:
            if isinstance(out, str | os.PathLike):
                self._save_to(str(Path(out).resolve()))
                return
            handle, name = tempfile.mkstemp(suffix=".xlsx")
            os.close(handle)
            try:
                self._save_to(name)
                with open(name, "rb") as written:
                    shutil.copyfileobj(written, out)
            finally:
                os.unlink(name)
        finally:
            self.close()

    def _save_to(self, path: str) -> None:
        self._send(("save", path))
        child = self._child
        assert child is not None
        assert child.stdout is not None
        try:
            # Our own child's answer through its pipe.
            outcome, detail = pickle.load(child.stdout)  # noqa: S301
        except EOFError:
            raise RuntimeError(f"the XLSX writer process stopped ({child.wait()})") from None
        if outcome != "saved":
            raise RuntimeError(f"the XLSX writer process failed: {detail}")
        self.peak_mib = detail

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()  # the child stops at the end of its input
            child.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
        finally:
            if child.stdout is not None:
                child.stdout.close()


def peak_mib() -> float | None:
    """This process's peak resident memory (VmHWM) in MiB; None where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _serve() -> None:
    """The child of a `WorkbookProcess`: sheets, rows and the save, read from stdin."""
    source, reply = sys.stdin.buffer, sys.stdout.buffer
    book = Workbook()
    failed: str | None = None
    try:
        while True:
            try:
                # From the parent that started this process, through its pipe.
                message = pickle.load(source)  # noqa: S301
            except EOFError:
                return
            if failed is not None and message[0] != "save":
                continue  # the error is told when the workbook is saved
            try:
                if message[0] == "sheet":
                    book.add_sheet(message[1], message[2])
                elif message[0] == "append":
                    book.sheets[message[1]].append(message[2])
                elif message[0] == "save":
                    if failed is None:
                        book.save(message[1])
                        pickle.dump(("saved", peak_mib()), reply)
                    else:
                        pickle.dump(("failed", failed), reply)
                    reply.flush()
                    return
            except Exception as error:  # told to the parent at the save
                failed = f"{type(error).__name__}: {error}"
    finally:
        book.close()
