"""Per-writer accounting: gaps, repeats and missing tails against the expected counts, and whether the set's
retention (``backupCount``, ``max_age``) can explain a missing oldest prefix. Anything it cannot explain is lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from flocklog.verify._model import Report, VerifyOptions, WriterReport
from flocklog.verify._slots import _slot_length

_IN_FLIGHT = 0.5


@dataclass(frozen=True)
class _Retention:
    """What the set's retention can explain: a missing oldest prefix is expired only where this says so."""

    options: VerifyOptions
    archives: int
    oldest_record: float | None

    @property
    def slack(self) -> float:
        """Seconds a record may wait between its creation and its write (a descheduled process holding it), so a
        file's records are time-ordered only to within this: comparisons with the oldest record allow it."""
        return max(self.options.tolerance, _IN_FLIGHT)

    def explains(self, first: int, started: float | None) -> tuple[bool, str]:
        """``(explained, why not)`` for missing records of a writer, all written at or after ``started``.

        Retention removes whole oldest files, so records written after the oldest surviving record sit in a
        surviving file: they cannot have been removed by it, whatever the options say.
        """
        options = self.options
        if options.allow_expired is True:
            return True, ""
        if options.allow_expired is False:
            return False, "expired records are not allowed (--no-allow-expired)"
        if started is not None and self.oldest_record is not None and started > self.oldest_record + self.slack:
            return False, "they were written after the oldest surviving record, so retention cannot have removed them"
        if options.backup_count is not None and options.backup_count > 0 and self.archives >= options.backup_count:
            return True, ""
        if options.max_age is not None:
            now = time.time() if options.now is None else options.now
            cutoff = now - options.max_age
            slack = options.tolerance + _slot_length(options)
            if started is not None and started <= cutoff:
                return True, ""
            if started is None and self.oldest_record is not None and self.oldest_record <= cutoff + slack:
                return True, ""
        if options.backup_count is not None:
            return (
                False,
                f"the set holds {self.archives} archive(s) and backupCount={options.backup_count} was never reached",
            )
        if options.max_age is not None:
            return False, f"nothing in the set is old enough for max_age={options.max_age:g}s to have removed it"
        return False, "no --backup-count or --max-age explains it (--allow-expired would accept it)"


def _check_writers(
    seqs: dict[tuple[str, str], Counter[int]],
    first_seen: dict[tuple[str, str], float],
    ledger: Mapping[tuple[str, str], tuple[int, float, float]],
    retention: _Retention,
    options: VerifyOptions,
    report: Report,
) -> None:
    for (run, writer), counter in sorted(seqs.items()):
        expect = options.expect_per_writer
        if options.expected_counts is not None:
            expect = options.expected_counts.get(writer, expect)
        booked = ledger.get((run, writer))
        started = None if booked is None else booked[1]
        tail_expired = False
        unique = sorted(counter)
        first, last = unique[0], unique[-1]
        writer_report = WriterReport(
            run=run,
            writer=writer,
            records=sum(counter.values()),
            first=first,
            last=last,
            duplicated=sum(count - 1 for count in counter.values()),
            lost=(last - first + 1) - len(unique),
        )
        if booked is not None:
            # The ledger is written after each record, so a killed writer may have logged one more than it says.
            if last > booked[0]:
                report.problems.append(f"writer {writer} has seq {last}, beyond its ledger's {booked[0]} records")
            expect = max(booked[0], last + 1) if expect is None else expect
        if expect is not None:
            if last >= expect and booked is None:
                report.problems.append(f"writer {writer} has seq {last}, beyond the expected {expect}")
            tail = max(0, expect - 1 - last)
            if tail and booked is not None:
                # A writer that stopped long before the others: retention may have removed its newest records
                # too, but only if it wrote them all before the oldest surviving record (written at booked[2]).
                explained, _ = retention.explains(tail, None)
                newest = booked[2]
                if (
                    explained
                    and retention.oldest_record is not None
                    and newest < retention.oldest_record + retention.slack
                ):
                    writer_report.expired += tail
                    tail_expired = True
                else:
                    report.notes.append(f"writer {writer}: newest {tail:,} missing, counted as lost")
            if tail and not tail_expired:
                writer_report.lost += tail
        if first > 0:
            explained, why = retention.explains(first, started)
            if explained:
                writer_report.expired += first
            else:
                writer_report.lost += first
                report.notes.append(f"writer {writer}: oldest {first:,} missing, counted as lost: {why}")
        report.writers.append(writer_report)
        report.lost += writer_report.lost
        report.duplicated += writer_report.duplicated
        report.expired += writer_report.expired
    found = {writer for _, writer in seqs}
    if options.expected_counts is not None:
        silent = {w: n for w, n in options.expected_counts.items() if w not in found and n > 0}
        report.missing_writers += len(silent)
        report.lost += sum(silent.values())
    for (run, writer), (count, started, newest) in sorted(ledger.items()):
        if (run, writer) in seqs or count == 0:
            continue
        if options.expected_counts is not None and writer in options.expected_counts:
            continue  # counted above
        explained, why = retention.explains(count, started)
        if explained and retention.oldest_record is not None and newest < retention.oldest_record + retention.slack:
            report.expired += count  # every record of it older than the oldest surviving one: retention
            continue
        report.missing_writers += 1
        report.lost += count
        report.notes.append(f"writer {writer} logged {count} record(s) by its ledger; none is in the set")
    if options.writers is not None and len(seqs) < options.writers:
        report.missing_writers = max(report.missing_writers, options.writers - len(seqs))
        if options.expect_per_writer is not None:
            report.lost += (options.writers - len(seqs)) * options.expect_per_writer
    if options.writers is not None and len(seqs) > options.writers:
        report.problems.append(f"found {len(seqs)} writers, expected {options.writers}")
