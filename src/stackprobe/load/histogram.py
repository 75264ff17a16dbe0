"""Latency histograms: HdrHistogram in microseconds, from 1 µs to one hour, 3 significant
digits (a value is stored within 0.1 % of itself), encoded as text to travel between
processes and merge exactly: the merge of encoded histograms has the same counts as one
histogram that recorded every sample."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: a longer latency is recorded as one hour
SIGNIFICANT_FIGURES = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


class Histogram:
    """One latency distribution (microseconds inside, milliseconds in summaries)."""

    def __init__(self) -> None:
        self.hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)

    def record(self, seconds: float) -> None:
        self.hdr.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6))))

    def add(self, other: Histogram) -> None:
        if other.count:
            self.hdr.add(other.hdr)

    @property
    def count(self) -> int:
        return int(self.hdr.get_total_count())

    def encode(self) -> str:
        """The compressed HdrHistogram encoding (base64 text), as other HdrHistogram tools read it."""
        return bytes(self.hdr.encode()).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Histogram:
        histogram = cls()
        if text:
            histogram.hdr.decode_and_add(text.encode("ascii"))
        return histogram

    def value_ms(self, percentile: float) -> float:
        return self.percentiles_ms([percentile])[0]

    def percentiles_ms(self, percentiles: list[float]) -> list[float]:
        """The values at `percentiles`, as HdrHistogram's get_value_at_percentile gives them
        (the highest value equivalent to the bucket the target count falls in), in one pass
        over the recorded range only: the library's own walk over every bucket takes tens of
        milliseconds, which the load engine cannot spend each second."""
        hdr = self.hdr
        if not self.count:
            return [0.0 for _ in percentiles]
        wanted = sorted(
            (hdr.get_target_count_at_percentile(p), i) for i, p in enumerate(percentiles)
        )
        out = [0.0] * len(percentiles)
        counts = hdr.counts
        running = 0
        first = hdr.get_counts_array_index(hdr.min_value)
        last = hdr.get_counts_array_index(hdr.max_value)
        for index in range(first, min(last, hdr.counts_len - 1) + 1):
            count = counts[index]
            if not count:
                continue
            running += count
            while wanted and running >= wanted[0][0]:
                value = hdr.get_highest_equivalent_value(hdr.get_value_from_index(index))
                out[wanted.pop(0)[1]] = round(value / 1000, 3)
            if not wanted:
                break
        return out

    def summary(self) -> dict[str, float | int]:
        """count, p50_ms, p90_ms, p99_ms, p999_ms, max_ms (0 when empty)."""
        values = self.percentiles_ms(list(PERCENTILES.values()))
        out: dict[str, float | int] = {"count": self.count}
        out.update({f"{name}_ms": v for name, v in zip(PERCENTILES, values, strict=True)})
        out["max_ms"] = (
            round(self.hdr.get_highest_equivalent_value(self.hdr.max_value) / 1000, 3)
            if self.count
            else 0.0
        )
        return out

    def counts(self) -> dict[int, int]:
        """Recorded value (µs, bucket's lowest equivalent) -> count: what "exact" compares."""
        return {
            int(item.value_iterated_to): int(item.count_at_value_iterated_to)
            for item in self.hdr.get_recorded_iterator()
        }


def merged(encoded: list[str]) -> Histogram:
    """One histogram from many encodings (workers, seconds): exact, counts add up."""
    total = Histogram()
    for text in encoded:
        if text:
            total.hdr.decode_and_add(text.encode("ascii"))
    return total
