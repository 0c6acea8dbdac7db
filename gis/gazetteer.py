"""Address geocoding core: Chinese address normalisation, a searchable gazetteer and reverse lookup.

Normalisation (:func:`normalize_address`) applies these rules, in this order:

1. Unicode NFKC, so full-width letters, digits and punctuation become half-width; then casefold.
2. A few traditional forms of address markers become simplified (號 樓 棟 單 區 縣 鎮 鄉).
3. Dashes of every kind become "-", and "#" after a digit or letter becomes 号 ("3#楼" = 3号楼).
4. Whitespace, punctuation, symbols and control characters are removed, except a "-" between two
   digits, which is kept because "5-2-301" (building-unit-room) must not collapse to 52301.
5. A run of Chinese numerals directly before an address marker (号 号楼 栋 幢 座 单元 室 房 户 楼
   层 期 区 排 组 路 街 巷 弄) becomes Arabic digits: 十二号 -> 12号, 一百零五室 -> 105室,
   五零一房 -> 501房 (runs without 十/百/千 are read digit by digit). Numerals elsewhere stay, so
   names such as 三元里 or 十堰 are untouched.
6. Variants are unified after a digit or letter: 号楼/幢/座 -> 栋 ("A座" = a栋), and after a
   digit 房/户 -> 室. 单元 needs no rule once 單 is simplified.
7. Leading administrative prefixes are dropped while something more specific follows them (at
   least two Chinese characters): a province (省, 自治区, 特别行政区), then a prefecture
   (市 with a 2-4 character name but not 市场/市民, 自治州, 地区, 盟), then a district (区, 县,
   旗, 新区, 自治县, 自治旗, or a county-level 市 after a prefecture). So
   "广东省深圳市福田区莲花街道景田社区" becomes "莲花街道景田社区", "深圳市福田区" becomes
   "福田区" and "深圳市" stays. This is a heuristic:
   words that merely end like a district (社区, 小区, 园区, 工业区, 超市, ...) are never taken for
   one, and a prefix without its suffix ("广东深圳...") is not recognised.

Search ranks by a score in [0, 1]: an exact match of the normalised query with a normalised name
or alias scores 1; containment (either string inside the other) scores 0.70-0.95 by the share of
the longer string that the shorter covers; anything else scores below 0.65, in proportion to the
Dice similarity of the two strings' sets of character unigrams and bigrams, so exact > containment
> fuzzy always. Candidates come from an inverted index of those n-grams: a query reads only the
posting lists of its own n-grams, and n-grams found in more than 1% of the names (区, 社区, ...)
add to scores without nominating candidates, so a query never scans every entry.

Reverse lookup projects every place once to an azimuthal equidistant frame centred on the data,
finds candidates with a shapely STRtree, and reports geodesic distances in metres (WGS-84).
"""

from __future__ import annotations

import csv
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Geod, Transformer
from shapely.geometry import shape

from gis.datums import to_wgs84_many

__all__ = [
    "KINDS",
    "UNIT_LAYERS",
    "Candidate",
    "Gazetteer",
    "PlaceRecord",
    "load_csv",
    "load_geojson",
    "normalize_address",
    "read_csv_records",
    "read_geojson_records",
]

KINDS: Final = ("district", "street", "community", "grid", "block", "landmark", "address")
UNIT_LAYERS: Final = ("district", "street", "community", "grid", "block")

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

_TRADITIONAL: Final = str.maketrans("號樓棟單區縣鎮鄉", "号楼栋单区县镇乡")
_DASHES: Final = str.maketrans(dict.fromkeys("‐‑‒–—―−﹣", "-"))
_KEEP_DASH: Final = "\ue000"  # private-use placeholder that survives punctuation stripping
_HASH_AFTER_ALNUM: Final = re.compile(r"(?<=[0-9a-z])#")
_DIGIT_DASH_DIGIT: Final = re.compile(r"(?<=\d)\s*-+\s*(?=\d)")

_CN_DIGITS: Final = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS: Final = {"十": 10, "百": 100, "千": 1000}
_MARKERS: Final = "号楼|号|栋|幢|座|单元|室|房|户|楼|层|期|区|排|组|路|街|巷|弄"
_CN_NUMBER_BEFORE_MARKER: Final = re.compile(rf"([零〇一二两三四五六七八九十百千]+)(?=(?:{_MARKERS}))")

_BUILDING_VARIANT: Final = re.compile(r"(?<=[0-9a-z])(?:号楼|幢|座)")
_ROOM_VARIANT: Final = re.compile(r"(?<=[0-9])[房户]")

_CJK: Final = r"[\u4e00-\u9fff]"
_PROVINCE: Final = re.compile(rf"^({_CJK}{{2,7}}?)(?:省|自治区|特别行政区)")
_PREFECTURE: Final = re.compile(rf"^(?:({_CJK}{{2,7}}?)(?:自治州|地区|盟)|({_CJK}{{2,4}}?)市(?![场民]))")
_DISTRICT: Final = re.compile(rf"^({_CJK}{{1,6}}?)(?:自治县|自治旗|新区|区|县|旗)")
_COUNTY_CITY: Final = re.compile(rf"^({_CJK}{{2,4}}?)市(?![场民])")
# Words that end like an administrative unit but name something smaller.
_NOT_ADMIN_ENDINGS: Final = (
    "社区",
    "小区",
    "园区",
    "景区",
    "校区",
    "片区",
    "街区",
    "厂区",
    "矿区",
    "营区",
    "库区",
    "工业区",
    "商业区",
    "住宅区",
    "生活区",
    "办公区",
    "服务区",
    "保税区",
    "超市",
    "城市",
    "门市",
    "夜市",
    "菜市",
)
_NOT_ADMIN_WORDS: Final = (
    "街道",
    "社区",
    "小区",
    "大道",
    "花园",
    "大厦",
    "广场",
    "中心",
    "公司",
    "学校",
    "医院",
)


def _cn_numeral_to_int(run: str) -> int:
    """Value of a Chinese numeral run such as 十二, 一百零五 or (digit by digit) 五零一."""
    if not any(ch in _CN_UNITS for ch in run):
        return int("".join(str(_CN_DIGITS[ch]) for ch in run))
    total = 0
    current = 0
    for ch in run:
        if ch in _CN_UNITS:
            # A bare 十 means 10 (十二 = 12), so a missing multiplier counts as one.
            total += (current or 1) * _CN_UNITS[ch]
            current = 0
        else:
            current = _CN_DIGITS[ch]
    return total + current


def _admin_prefix_ok(prefix: str, rest: str) -> bool:
    if sum(1 for ch in rest if "\u4e00" <= ch <= "\u9fff") < 2:
        return False
    if prefix.endswith(_NOT_ADMIN_ENDINGS):
        return False
    return not any(word in prefix for word in _NOT_ADMIN_WORDS)


def _drop_admin_prefixes(text: str) -> str:
    match = _PROVINCE.match(text)
    if match and _admin_prefix_ok(match.group(0), text[match.end() :]):
        text = text[match.end() :]
    match = _PREFECTURE.match(text)
    prefecture_dropped = bool(match and _admin_prefix_ok(match.group(0), text[match.end() :]))
    if match and prefecture_dropped:
        text = text[match.end() :]
    # A county-level city (昆山市) is only recognised after its prefecture, as 市 is too common alone.
    patterns = (_DISTRICT, _COUNTY_CITY) if prefecture_dropped else (_DISTRICT,)
    for pattern in patterns:
        match = pattern.match(text)
        if match and _admin_prefix_ok(match.group(0), text[match.end() :]):
            return text[match.end() :]
    return text


def _strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text if ch == _KEEP_DASH or unicodedata.category(ch)[0] not in "PSZC")


def normalize_address(s: str) -> str:
    """Normalise a Chinese address or place name for matching (rules in the module docstring)."""
    text = unicodedata.normalize("NFKC", s).casefold()
    text = text.translate(_TRADITIONAL).translate(_DASHES)
    text = _HASH_AFTER_ALNUM.sub("号", text)
    text = _DIGIT_DASH_DIGIT.sub(_KEEP_DASH, text)
    text = _strip_punctuation(text).replace(_KEEP_DASH, "-")
    text = _CN_NUMBER_BEFORE_MARKER.sub(lambda m: str(_cn_numeral_to_int(m.group(1))), text)
    text = _BUILDING_VARIANT.sub("栋", text)
    text = _ROOM_VARIANT.sub("室", text)
    return _drop_admin_prefixes(text)


# ---------------------------------------------------------------------------------------------
# Records and candidates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceRecord:
    """One named place in WGS-84: name, kind, position, the units it lies in, and aliases."""

    name: str
    kind: str
    lon: float
    lat: float
    unit_codes: Mapping[str, str] | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A search or reverse-lookup result; ``matched`` is the name or alias that matched the query."""

    name: str
    kind: str
    lon: float
    lat: float
    score: float
    distance_m: float | None = None
    unit_codes: dict[str, str] = field(default_factory=dict, hash=False)
    matched: str = ""


RecordLike = PlaceRecord | Sequence[Any]


def _coerce_record(raw: RecordLike, index: int) -> PlaceRecord:
    if isinstance(raw, PlaceRecord):
        record = raw
    else:
        if not 4 <= len(raw) <= 6:
            raise ValueError(
                f"record {index}: expected (name, kind, lon, lat[, unit_codes[, aliases]]), got {raw!r}"
            )
        name, kind, lon, lat = raw[0], raw[1], raw[2], raw[3]
        unit_codes = raw[4] if len(raw) > 4 else None
        aliases = raw[5] if len(raw) > 5 else ()
        if isinstance(aliases, str):
            aliases = _split_aliases(aliases)
        record = PlaceRecord(str(name), str(kind), float(lon), float(lat), unit_codes, tuple(aliases or ()))
    if not record.name.strip():
        raise ValueError(f"record {index}: empty name")
    if record.kind not in KINDS:
        raise ValueError(
            f"record {index} ({record.name!r}): unknown kind {record.kind!r}; expected one of {KINDS}"
        )
    if not (math.isfinite(record.lon) and math.isfinite(record.lat)):
        raise ValueError(f"record {index} ({record.name!r}): non-finite coordinates")
    if not (-180.0 <= record.lon <= 180.0 and -90.0 <= record.lat <= 90.0):
        raise ValueError(
            f"record {index} ({record.name!r}): lon/lat out of range: {record.lon}, {record.lat}"
        )
    return record


def _split_aliases(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split("|") if part.strip())


def _ngrams(text: str) -> set[str]:
    """Character unigrams and bigrams, the units of the inverted index."""
    grams = set(text)
    grams.update(text[i : i + 2] for i in range(len(text) - 1))
    return grams


# ---------------------------------------------------------------------------------------------
# Gazetteer
# ---------------------------------------------------------------------------------------------

_CONTAINMENT_BASE: Final = 0.70
_CONTAINMENT_SPAN: Final = 0.25
_FUZZY_MAX: Final = 0.65
_GEOD: Final = Geod(ellps="WGS84")


class Gazetteer:
    """An in-memory gazetteer of named places with ranked fuzzy search and reverse lookup."""

    def __init__(self, records: Iterable[RecordLike]) -> None:
        self._records: list[PlaceRecord] = [_coerce_record(raw, i) for i, raw in enumerate(records)]
        keys: list[str] = []
        key_entry: list[int] = []
        key_label: list[str] = []
        for entry, record in enumerate(self._records):
            seen: set[str] = set()
            for label in (record.name, *record.aliases):
                key = normalize_address(label)
                if key and key not in seen:
                    seen.add(key)
                    keys.append(key)
                    key_entry.append(entry)
                    key_label.append(label)
        self._keys = keys
        self._key_label = key_label
        self._key_entry = np.asarray(key_entry, dtype=np.int64)
        self._exact: dict[str, list[int]] = {}
        postings: dict[str, list[int]] = {}
        gram_counts = np.zeros(len(keys), dtype=np.int32)
        for key_id, key in enumerate(keys):
            self._exact.setdefault(key, []).append(key_id)
            grams = _ngrams(key)
            gram_counts[key_id] = len(grams)
            for gram in grams:
                postings.setdefault(gram, []).append(key_id)
        self._postings: dict[str, NDArray[np.int64]] = {
            gram: np.asarray(ids, dtype=np.int64) for gram, ids in postings.items()
        }
        self._gram_counts = gram_counts
        self._key_length = np.asarray([len(k) for k in keys], dtype=np.int64)
        self._kind_code = {kind: code for code, kind in enumerate(KINDS)}
        self._key_kind = np.asarray(
            [self._kind_code[self._records[e].kind] for e in key_entry], dtype=np.int64
        )
        # Grams shared by a large share of the keys (区, 社区, ...) carry little information and have
        # long posting lists, so they only add to scores and do not nominate candidates.
        self._common_df = max(200, len(keys) // 100)
        self._reverse_index: _ReverseIndex | None = None

    @classmethod
    def from_records(cls, records: Iterable[RecordLike]) -> Gazetteer:
        """Build from PlaceRecords or tuples (name, kind, lon, lat[, unit_codes[, aliases]])."""
        return cls(records)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> Sequence[PlaceRecord]:
        """The places, in the order given."""
        return tuple(self._records)

    def _candidate(
        self, entry: int, score: float, matched: str, distance_m: float | None = None
    ) -> Candidate:
        record = self._records[entry]
        return Candidate(
            name=record.name,
            kind=record.kind,
            lon=record.lon,
            lat=record.lat,
            score=score,
            distance_m=distance_m,
            unit_codes=dict(record.unit_codes or {}),
            matched=matched,
        )

    def _candidates(self, query: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Key ids sharing a rare n-gram with the query, and how many of the query's n-grams each has."""
        grams = _ngrams(query)
        lists = [self._postings[g] for g in grams if g in self._postings]
        if not lists:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rare = [ids for ids in lists if len(ids) <= self._common_df]
        if not rare:
            rare = sorted(lists, key=len)[:3]
        candidates = np.unique(np.concatenate(rare))
        # Count shared n-grams (common ones included) through one scratch array; posting lists hold
        # unique ids, so fancy-index increments are exact.
        shared = np.zeros(len(self._keys), dtype=np.int32)
        for ids in lists:
            shared[ids] += 1
        return candidates, shared[candidates].astype(np.float64)

    def _scores(
        self, query: str, key_ids: NDArray[np.int64], hits: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Exact 1, containment 0.70-0.95, otherwise a Dice similarity scaled below 0.65."""
        n_query = len(_ngrams(query))
        key_grams = self._gram_counts[key_ids]
        scores = _FUZZY_MAX * np.minimum(2.0 * hits / (key_grams + n_query), 0.999)
        # Containment needs every n-gram of the shorter string in the longer, so only those few
        # candidates get the (Python-level) substring test.
        possible = np.flatnonzero((hits >= key_grams) | (hits >= n_query))
        for i in possible:
            key = self._keys[int(key_ids[i])]
            if key == query:
                scores[i] = 1.0
            elif key in query or query in key:
                short, long_ = sorted((len(key), len(query)))
                scores[i] = _CONTAINMENT_BASE + _CONTAINMENT_SPAN * short / long_
        return scores

    def search(self, q: str, *, limit: int = 10, kinds: Iterable[str] | None = None) -> list[Candidate]:
        """Ranked candidates for a free-text query; exact beats containment beats fuzzy."""
        query = normalize_address(q)
        if not query or limit <= 0:
            return []
        key_ids, hits = self._candidates(query)
        if kinds is not None:
            wanted = [self._kind_code[k] for k in set(kinds) if k in self._kind_code]
            keep = np.isin(self._key_kind[key_ids], wanted)
            key_ids, hits = key_ids[keep], hits[keep]
        if len(key_ids) == 0:
            return []
        scores = self._scores(query, key_ids, hits)
        # Ties go to the shorter (more specific-looking) key, then to input order, for stable output.
        order = np.lexsort((key_ids, self._key_length[key_ids], -scores))
        results: list[Candidate] = []
        seen: set[int] = set()
        for i in order:
            key_id = int(key_ids[i])
            entry = int(self._key_entry[key_id])
            if entry in seen:
                continue
            seen.add(entry)
            results.append(self._candidate(entry, round(float(scores[i]), 6), self._key_label[key_id]))
            if len(results) == limit:
                break
        return results

    def reverse(
        self, lon: float, lat: float, *, max_distance_m: float = 500.0, kinds: Iterable[str] | None = None
    ) -> Candidate | None:
        """The nearest place within ``max_distance_m`` metres (geodesic), or None."""
        if not (math.isfinite(lon) and math.isfinite(lat)) or max_distance_m < 0:
            raise ValueError(f"bad reverse query: lon={lon}, lat={lat}, max_distance_m={max_distance_m}")
        if not self._records:
            return None
        if self._reverse_index is None:
            self._reverse_index = _ReverseIndex(self._records)
        index = self._reverse_index
        entries = index.within(lon, lat, max_distance_m)
        if wanted := (set(kinds) if kinds is not None else None):
            entries = np.asarray([e for e in entries if self._records[e].kind in wanted], dtype=np.int64)
        if len(entries) == 0:
            return None
        distances = index.geodesic_m(lon, lat, entries)
        nearest = int(np.argmin(distances))
        distance = float(distances[nearest])
        if distance > max_distance_m:
            return None
        return self._candidate(
            int(entries[nearest]), 1.0, self._records[int(entries[nearest])].name, distance
        )


class _ReverseIndex:
    """STRtree over the places, projected to an azimuthal equidistant frame centred on the data."""

    def __init__(self, records: Sequence[PlaceRecord]) -> None:
        self.lon = np.asarray([r.lon for r in records], dtype=np.float64)
        self.lat = np.asarray([r.lat for r in records], dtype=np.float64)
        lon_0 = float((self.lon.min() + self.lon.max()) / 2)
        lat_0 = float((self.lat.min() + self.lat.max()) / 2)
        frame = CRS.from_proj4(f"+proj=aeqd +lat_0={lat_0} +lon_0={lon_0} +datum=WGS84 +units=m")
        self.transformer = Transformer.from_crs("EPSG:4326", frame, always_xy=True)
        x, y = self.transformer.transform(self.lon, self.lat)
        self.tree = shapely.STRtree(shapely.points(x, y))

    def within(self, lon: float, lat: float, distance_m: float) -> NDArray[np.int64]:
        x, y = self.transformer.transform(lon, lat)
        # Away from the centre the frame stretches distances slightly; the margin covers that, and the
        # exact geodesic distance decides afterwards.
        margin = distance_m * 0.02 + 1.0
        hits = self.tree.query(shapely.Point(x, y), predicate="dwithin", distance=distance_m + margin)
        return np.asarray(hits, dtype=np.int64)

    def geodesic_m(self, lon: float, lat: float, entries: NDArray[np.int64]) -> NDArray[np.float64]:
        n = len(entries)
        _, _, dist = _GEOD.inv(np.full(n, lon), np.full(n, lat), self.lon[entries], self.lat[entries])
        return np.asarray(dist, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def _unit_codes_from(props: Mapping[str, Any]) -> dict[str, str] | None:
    codes: dict[str, str] = {}
    nested = props.get("unit_codes")
    if isinstance(nested, Mapping):
        codes.update({str(k): str(v) for k, v in nested.items() if v not in (None, "")})
    for layer in UNIT_LAYERS:
        value = props.get(f"{layer}_code")
        if value not in (None, ""):
            codes[layer] = str(value)
    return codes or None


def _reproject(records: list[PlaceRecord], crs: str) -> list[PlaceRecord]:
    if not records:
        return records
    lon, lat = to_wgs84_many([r.lon for r in records], [r.lat for r in records], crs)
    return [
        PlaceRecord(r.name, r.kind, float(x), float(y), r.unit_codes, r.aliases)
        for r, x, y in zip(records, lon, lat, strict=True)
    ]


def read_csv_records(path: str | Path, *, crs: str = "wgs84") -> list[PlaceRecord]:
    """Read places from a UTF-8 CSV with columns name, kind, lon, lat[, aliases][, <layer>_code]."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "kind", "lon", "lat"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing CSV column(s) {sorted(missing)}")
        records: list[PlaceRecord] = []
        for line, row in enumerate(reader, start=2):
            try:
                lon, lat = float(row["lon"]), float(row["lat"])
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{path}:{line}: bad lon/lat {row.get('lon')!r}, {row.get('lat')!r}"
                ) from exc
            record = PlaceRecord(
                name=(row["name"] or "").strip(),
                kind=(row["kind"] or "").strip(),
                lon=lon,
                lat=lat,
                unit_codes=_unit_codes_from(row),
                aliases=_split_aliases(row.get("aliases") or ""),
            )
            records.append(_coerce_record(record, line))
    return _reproject(records, crs)


def read_geojson_records(
    path: str | Path, *, crs: str = "wgs84", default_kind: str | None = None
) -> list[PlaceRecord]:
    """Read places from GeoJSON features: points as they are, other geometries by a representative point."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif data.get("type") == "Feature":
        features = [data]
    else:
        raise ValueError(
            f"{path}: expected a GeoJSON FeatureCollection or Feature, got type {data.get('type')!r}"
        )
    records: list[PlaceRecord] = []
    for i, feature in enumerate(features):
        props = feature.get("properties") or {}
        if not feature.get("geometry"):
            raise ValueError(f"{path}: feature {i} has no geometry")
        geom = shape(feature["geometry"])
        if geom.is_empty:
            raise ValueError(f"{path}: feature {i} has an empty geometry")
        # A polygon's centroid can fall outside it (a C-shaped district); a representative point cannot.
        point = geom if geom.geom_type == "Point" else geom.representative_point()
        aliases = props.get("aliases") or ()
        if isinstance(aliases, str):
            aliases = _split_aliases(aliases)
        record = PlaceRecord(
            name=str(props.get("name") or "").strip(),
            kind=str(props.get("kind") or default_kind or "").strip(),
            lon=float(point.x),
            lat=float(point.y),
            unit_codes=_unit_codes_from(props),
            aliases=tuple(str(a) for a in aliases),
        )
        records.append(_coerce_record(record, i))
    return _reproject(records, crs)


def load_csv(path: str | Path, *, crs: str = "wgs84") -> Gazetteer:
    """Build a Gazetteer from a CSV file (see :func:`read_csv_records`)."""
    return Gazetteer(read_csv_records(path, crs=crs))


def load_geojson(path: str | Path, *, crs: str = "wgs84", default_kind: str | None = None) -> Gazetteer:
    """Build a Gazetteer from a GeoJSON file (see :func:`read_geojson_records`)."""
    return Gazetteer(read_geojson_records(path, crs=crs, default_kind=default_kind))
