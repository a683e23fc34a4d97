"""The dataset card (``README.md``). Pure: arguments in, Markdown out.

The YAML front matter declares one ``default`` config whose ``data_files`` name only the
index (compacted file + shards), so ``datasets.load_dataset(<folder or repo>)`` and the Hub
viewer read the index and never the per-item files or ``.coord/``; ``dataset_info.features``
pins the column types so every shard reads the same way.

In the sharded layout (``layout="shards"``) the configs are ``index`` (the Parquet index, first and
``default``: its files carry their own schema, the preview declared an ``Image``), ``splats`` (the
WebDataset tars) and, when PLYs are published, ``ply``; never ``.coord/`` or the JSONL ledger.
``datasets`` 5.x infers one builder for the whole repo from the first config (upstream issue
huggingface/datasets#7101), so ``load_dataset(repo, "splats")`` does not read the tars: the card
shows the form that does (the ``webdataset`` builder on the tars' ``hf://`` paths).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

from ..records import IndexRow
from .card_columns import columns_section
from .card_features import shard_features
from .index import index_features
from .parquet_index import row_members
from .shard_layout import PLY_DIR

APPLE_NOTICE = (
    "Apple Machine Learning Research Model is licensed under the Apple Machine Learning "
    "Research Model License Agreement."
)



SHARP_PREDICTORS = frozenset({"sharp", "sharp-cli"})
_PREDICTOR_TEXT = {
    "sharp": "SHARP (Apple's ml-sharp, in process)",
    "sharp-cli": "SHARP (Apple's ml-sharp, through its `sharp predict` command)",
    "planar": "planar (a CPU stand-in that lifts each pixel onto a flat plane: NOT SHARP, a demo)",
}
# The card says what it was made from in one machine-readable line, so a store can tell whether a
# publish brings something new (and rewrite the card) without reading every row. A card without
# it (and without the old generated card's removal sentence) is the maintainer's own: kept as is.
_FACTS_RE = re.compile(r"<!-- sharp-dataset card: sources=(.*?); predictors=(.*?)(?:; splats=(.*?); ply=(.*?))? -->")
_OLD_GENERATED = "Maintainers carry out a request with `sharp-dataset remove ID"


def _names(part: str | None) -> frozenset[str]:
    return frozenset(x for x in (part or "").split(",") if x)


@dataclass(frozen=True)
class CardFacts:
    """What a generated card lists: the photo sources and the predictors of the published items, and the
    tar member fields its ``splats`` and ``ply`` configs declare features for."""

    sources: frozenset[str] = frozenset()
    predictors: frozenset[str] = frozenset()
    splat_fields: frozenset[str] = frozenset()
    ply_fields: frozenset[str] = frozenset()

    @classmethod
    def of_rows(cls, rows: Iterable[IndexRow]) -> CardFacts:
        """The facts that published ``rows`` need a card to list. Raises ``StoreError`` for a row whose
        ``members`` is malformed."""
        sources: set[str] = set()
        predictors: set[str] = set()
        splat: set[str] = set()
        ply: set[str] = set()
        for row in rows:
            if row.source:
                sources.add(row.source)
            if row.predictor:
                predictors.add(row.predictor)
            for m in row_members(row):
                (ply if m.shard.startswith(PLY_DIR + "/") else splat).add(m.field)
        return cls(frozenset(sources), frozenset(predictors), frozenset(splat), frozenset(ply))

    def covers(self, other: CardFacts) -> bool:
        return (other.sources <= self.sources and other.predictors <= self.predictors
                and other.splat_fields <= self.splat_fields and other.ply_fields <= self.ply_fields)

    def union(self, other: CardFacts) -> CardFacts:
        return CardFacts(self.sources | other.sources, self.predictors | other.predictors,
                         self.splat_fields | other.splat_fields, self.ply_fields | other.ply_fields)

    def comment(self) -> str:
        """The card's machine-readable line (read back by ``card_facts``)."""
        def join(names: frozenset[str]) -> str:
            return ",".join(sorted(names))

        return (f"<!-- sharp-dataset card: sources={join(self.sources)}; predictors={join(self.predictors)};"
                f" splats={join(self.splat_fields)}; ply={join(self.ply_fields)} -->")


def card_facts(text: str) -> CardFacts | None:
    """The facts of a card this project generated (older generated cards: no facts yet); ``None``
    for a card somebody wrote by hand, which is never rewritten."""
    match = _FACTS_RE.search(text)
    if match is not None:
        return CardFacts(*(_names(match.group(i)) for i in range(1, 5)))
    return CardFacts() if _OLD_GENERATED in text else None


def card_is_stale(facts: CardFacts | None, rows: Iterable[IndexRow] | None) -> bool:
    """Whether a generated card (``facts``; ``None``: hand-written, never rewritten) should be
    rewritten: always when ``rows`` is None (a compaction), else when the published ``rows``
    bring a source, a predictor or a tar member field that it does not list yet."""
    if facts is None:
        return False
    if rows is None:
        return True
    return not facts.covers(CardFacts.of_rows(rows))


def _q(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: safe for colons, quotes, unicode.
    return json.dumps(text, ensure_ascii=False)


def _front_matter(title: str, index_glob: str, features: dict[str, str], sharp: bool) -> list[str]:
    lines = [
        "---",
        f"pretty_name: {_q(title)}",
        "license: other",
        "license_name: mixed",
        "tags:",
        "- gaussian-splatting",
        "- 3d",
        *(["- sharp"] if sharp else []),
        "configs:",
        "- config_name: default",
        "  default: true",
        "  data_files:",
        "  - split: train",
        f"    path: {_q(index_glob)}",
        *_dataset_info(features),
        "---",
    ]
    return lines


INDEX_CONFIG_GLOB = "data/index/**/*.parquet"
SHARDS_CONFIGS = (("index", INDEX_CONFIG_GLOB), ("splats", "data/shards/**/*.tar"),
                  ("ply", "data/ply/**/*.tar"))
# The files layout with its typed twins: the index alone (its JSONL files are the row ledger).
FILES_CONFIGS = (("index", INDEX_CONFIG_GLOB),)


def shards_configs(ply: bool) -> list[dict[str, object]]:
    """The card's ``configs`` of the sharded layout: ``index`` (the default), ``splats`` and, with PLY
    shards, ``ply``."""
    return [{"config_name": name, **({"default": True} if name == "index" else {}),
             "data_files": [{"split": "train", "path": glob}]}
            for name, glob in SHARDS_CONFIGS if name != "ply" or ply]


class CardYamlError(ValueError):
    """A card's YAML front matter cannot be read (not YAML, or not a mapping)."""


_FRONT_MATTER_RE = re.compile(r"\A\s*---\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def retarget_card(text: str, ply: bool) -> str | None:
    """A hand-written card with its YAML ``configs`` pointed at the sharded layout (its prose and other
    keys kept; ``dataset_info``, which describes the old files' columns, dropped): a migrated dataset's
    readers get the index and shards, not the per-item files that are gone. ``None`` when nothing would
    change; ``CardYamlError`` when the YAML cannot be read (the caller then leaves the card as it is)."""
    match = _FRONT_MATTER_RE.match(text)
    body = text[match.end():] if match else text
    try:
        data = yaml.safe_load(match.group(1)) if match else {}
    except yaml.YAMLError as exc:
        raise CardYamlError(f"its YAML front matter is not valid YAML ({exc.__class__.__name__})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CardYamlError("its YAML front matter is not a mapping")
    data.pop("dataset_info", None)
    data["configs"] = shards_configs(ply)
    out = f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n{body}"
    return None if out == text else out


def _shards_front_matter(title: str, sharp: bool, ply: bool,
                         configs: tuple[tuple[str, str], ...] = SHARDS_CONFIGS,
                         infos: list[dict[str, object]] | None = None) -> list[str]:
    webdataset = ["- webdataset"] if configs is SHARDS_CONFIGS else []
    lines = ["---", f"pretty_name: {_q(title)}", "license: other", "license_name: mixed", "tags:",
             "- gaussian-splatting", "- 3d", *webdataset, *(["- sharp"] if sharp else []), "configs:"]
    for name, glob in configs:
        if name == "ply" and not ply:
            continue
        lines += [f"- config_name: {name}", *(["  default: true"] if name == "index" else []),
                  "  data_files:", "  - split: train", f"    path: {_q(glob)}"]
    if infos:
        lines += yaml.safe_dump({"dataset_info": infos}, sort_keys=False, allow_unicode=True).splitlines()
    return [*lines, "---"]


def shard_config_infos(splat_fields: Iterable[str], ply_fields: Iterable[str]) -> list[dict[str, object]]:
    """The card's ``dataset_info`` entries of the WebDataset configs: the features of the members the
    dataset's tars hold (none for a config with no tars yet)."""
    infos: list[dict[str, object]] = []
    for name, fields in (("splats", set(splat_fields)), ("ply", set(ply_fields))):
        if fields:
            infos.append({"config_name": name, "features": shard_features(fields)})
    return infos


def _shards_layout(repo: str, ply: bool) -> list[str]:
    where = repo or "<this repo>"
    return [
        "## Layout",
        "",
        "- `data/index/**/*.parquet`: the index, one row per item with a preview image (config `index`).",
        "- `data/shards/<bb>/<batch>-<part>.tar`: WebDataset shards, per item `<key>.jpg` (the original",
        "  photo, byte for byte: a PNG or WebP photo keeps its bytes under this name too, its format in",
        "  the json's `photo_format`), `<key>.spz`, `<key>.json` and `<key>.webp` (the preview) (config",
        "  `splats`).",
        *(["- `data/ply/<bb>/<batch>-<part>.tar`: the full PLY splats, `<key>.ply` (config `ply`), in tars",
            "  of their own: `datasets`' WebDataset builder would decode a `.ply` member as a mesh through",
            "  trimesh, which keeps only the points; declared `binary` here, it stays the file's bytes."]
          if ply else []),
        "- `.coord/` and `data/*.jsonl`: coordination state and the row ledger of the machines that build",
        "  the dataset; not data.",
        "",
        f"Load the index with `datasets.load_dataset(\"{where}\")`. The shards, with their files named",
        "(`datasets` 5.x takes one builder for a whole repository from its first config, the Parquet",
        "index, so `load_dataset(repo, \"splats\")` alone would read the tars as Parquet) and with the",
        "types this card declares (without them `datasets` guesses each `json` field from the first",
        "samples, and a field null there fails later):",
        "",
        "```python",
        "from datasets import load_dataset, load_dataset_builder",
        f"features = load_dataset_builder(\"{where}\", \"splats\").info.features",
        f"splats = load_dataset(\"{where}\", \"splats\", data_files={{\"train\": \"data/shards/**/*.tar\"}},",
        "                      features=features, split=\"train\", streaming=True)",
        "```",
        "",
        "or `webdataset.WebDataset(urls)` on the tars' download URLs.",
        "",
    ]


def _dataset_info(features: dict[str, str], description: str = "") -> list[str]:
    lines = ["dataset_info:", "  config_name: default"]
    if description:
        lines.append(f"  description: {_q(description)}")
    lines.append("  features:")
    for name, dtype in features.items():
        lines += [f"  - name: {_q(name)}", f"    dtype: {dtype}"]
    return lines


def render_snapshot_yaml(snapshot: str, features: dict[str, str] | None = None, layout: str = "files",
                         facts: CardFacts | None = None) -> str:
    """``.huggingface.yaml`` of a local store: the card's ``dataset_info`` plus the name of the
    latest index snapshot, rewritten by every publish step.

    ``datasets`` (5.x) fingerprints a local folder whose card has ``configs`` by the card's YAML and
    the *unresolved* ``data_files`` patterns only, never by the files they match: without a value
    that changes per publish, a second load returns the rows cached by the first, and two stores
    with the same folder name share one cache entry. It merges this file's top-level keys over the
    card's, so this ``dataset_info`` (same features, a description naming the snapshot) is hashed;
    being merged whole, it repeats the shard configs' features of a generated card (``facts``).
    """
    description = f"Index snapshot {snapshot} (changes with every publish step; caches follow it)."
    if layout == "shards":  # the Parquet index carries its own schema: only the snapshot's name here
        infos: list[dict[str, object]] = [{"config_name": "index", "description": description}]
        if facts is not None:
            infos += shard_config_infos(facts.splat_fields, facts.ply_fields)
        return yaml.safe_dump({"dataset_info": infos}, sort_keys=False, allow_unicode=True)
    feats = features if features is not None else index_features()
    return "\n".join(_dataset_info(feats, description)) + "\n"


def _licence_section(sources: list[str], predictors: list[str], licence_notes: list[str]) -> list[str]:
    lines = ["## Licences", ""]
    if any(s.lower().startswith("unsplash") for s in sources):
        lines += [
            "**Unsplash photos** are not CC0: they are provided under the Unsplash License",
            "(https://unsplash.com/license). Each row carries the attribution fields `user_name`,",
            "`user_username`, `user_url`, `page_url` and `unsplash_url`: credit the photographer and",
            "link back to the photo when you use it. Unsplash's guidelines restrict using its photos for",
            "machine learning / AI and for technology that identifies people (https://unsplash.com/data);",
            "this dataset is for research only, and Unsplash gives no model or property releases.",
            "",
        ]
    if any(not s.lower().startswith("unsplash") for s in sources):
        lines += [
            "**User-provided photos** (local folders, URL lists, manifests) keep their own licence,",
            "as stated in the `license` column where known; the person who published this dataset is",
            "responsible for having the right to share them.",
            "",
        ]
    if any(p in SHARP_PREDICTORS for p in predictors):
        lines += [
            "**Splats made with SHARP** (rows whose `predictor` is `sharp` or `sharp-cli`: the PLY files",
            "and formats derived from them) were made with Apple's SHARP model and are subject to the",
            "Apple Machine Learning Research Model License (research use only;",
            "https://github.com/apple/ml-sharp).",
            "",
            APPLE_NOTICE,
            "",
        ]
    if "planar" in predictors:
        lines += [
            "**Splats made by the `planar` predictor** are not SHARP output: sharp-dataset's own CPU",
            "stand-in (MIT licensed code) lifts each pixel of the photo onto a flat plane. They carry no",
            "model licence; the photo's own licence applies to what they show.",
            "",
        ]
    for note in licence_notes:
        lines += [note, ""]
    return lines


def _made_with(predictors: list[str]) -> list[str]:
    if not predictors:
        return ["3D Gaussian splats predicted from single photos, one splat per photo, with the original",
                "photo and its attribution. Nothing is published yet.", ""]
    sharp = [p for p in predictors if p in SHARP_PREDICTORS]
    intro = ("3D Gaussian splats predicted from single photos with Apple's SHARP model, one splat per"
             if sharp and len(sharp) == len(predictors) else
             "3D Gaussian splats made from single photos, one splat per")
    made = "; ".join(_PREDICTOR_TEXT.get(p, f"`{p}`") for p in predictors)
    lines = [intro, "photo, with the original photo and its attribution.", "", f"Made with: {made}.", ""]
    if not sharp:
        lines += ["**These splats were not made with SHARP**: the `predictor` column of every row says what",
                  "made it.", ""]
    return lines


def render_card(
    *,
    title: str,
    sources: list[str],
    predictors: list[str] | None = None,
    licence_notes: list[str] | None = None,
    index_glob: str = "data/*.jsonl",
    features: dict[str, str] | None = None,
    layout: str = "files",
    ply_config: bool = False,
    repo: str = "",
    typed_index: bool = False,
    splat_fields: Iterable[str] = (),
    ply_fields: Iterable[str] = (),
) -> str:
    """The dataset card: YAML front matter (configs, features) plus a human-readable body.

    ``features`` defaults to the ``IndexRow`` column types; ``sources`` names where photos
    come from and ``predictors`` what made the splats (both decide which licence paragraphs
    appear: SHARP's licence only when SHARP made some); ``licence_notes`` are extra paragraphs.
    ``layout="shards"`` gives the sharded layout's configs and layout section (``ply_config``: the
    dataset has PLY shards; ``repo``: its id, for the loading example). ``typed_index`` (files layout):
    the dataset keeps the typed Parquet twins of its JSONL index (``files_index``), which become its one
    config, ``index``. ``splat_fields`` / ``ply_fields``: the member fields of the dataset's tars, whose
    features the card declares (``card_features``).
    """
    feats = features if features is not None else index_features()
    source_list = sorted(set(sources))
    predictor_list = sorted(set(predictors or []))
    sharp = any(p in SHARP_PREDICTORS for p in predictor_list)
    shards = layout == "shards"
    splat_set, ply_set = (frozenset(splat_fields), frozenset(ply_fields)) if shards else (frozenset(), frozenset())
    ply_config = ply_config or bool(ply_set)
    facts = CardFacts(frozenset(source_list), frozenset(predictor_list), splat_set, ply_set)
    if shards or typed_index:
        lines = _shards_front_matter(title, sharp, ply_config,
                                     configs=SHARDS_CONFIGS if shards else FILES_CONFIGS,
                                     infos=shard_config_infos(facts.splat_fields, facts.ply_fields))
    else:
        lines = _front_matter(title, index_glob, feats, sharp)
    lines += [
        "",
        facts.comment(),
        f"# {title}",
        "",
        *_made_with(predictor_list),
        f"Sources: {', '.join(source_list) if source_list else 'none yet'}.",
        "",
    ]
    lines += _shards_layout(repo, ply_config) if shards else _files_layout(index_glob, typed_index)
    lines += columns_section(feats, shards or typed_index)
    lines += _licence_section(source_list, predictor_list, licence_notes or [])
    lines += _REMOVAL_SECTION
    return "\n".join(lines)


def _files_layout(index_glob: str, typed: bool = False) -> list[str]:
    """The files layout's section: the index (typed Parquet twins of the JSONL files, or the JSONL files
    alone) and one folder per item."""
    index = (["- `data/index/files/*.parquet`: the index, one row per item with a preview image (config",
              f"  `index`), made from the JSONL rows of `{index_glob}` (a compacted file plus newer shards)."]
             if typed else
             [f"- `{index_glob}`: the index, one JSON line per item (a compacted file plus newer shards)."])
    return [
        "## Layout",
        "",
        *index,
        "- `<subdir>/<id>/<id>.<ext>` (optionally grouped by the id's first two characters): the",
        "  original photo and the splat files of each item.",
        "- `.coord/`: coordination state of the machines that build the dataset; not data.",
        "",
        "Load the index with `datasets.load_dataset(<this repo or folder>)`.",
        "",
    ]


_REMOVAL_SECTION = (
    "## Removal requests",
    "",
    "If you are the author of a photo (or appear in one) and want it removed, open a discussion",
    "on this dataset's page (or contact its maintainer) with the item `id` or the photo URL.",
    "Maintainers carry out a request with `sharp-dataset remove ID --reason ...`: the item's files",
    "and index row are deleted in one step and its id is excluded, so no client publishes it again.",
    "",
)
