"""The one place storage keys are built. The layout, identical on every driver:

    v1/blobs/<alg>/<hex[0:2]>/<hex>/data                           every blob once (global CAS)
    v1/repositories/<name>/_layers/<alg>/<hex>/link                this repo may serve that blob
    v1/repositories/<name>/_manifests/revisions/<alg>/<hex>/link   a manifest of this repo
    v1/repositories/<name>/_manifests/revisions/<alg>/<hex>/mediatype   its pushed Content-Type
    v1/repositories/<name>/_manifests/tags/<tag>/current/link      tag → manifest digest
    v1/repositories/<name>/_referrers/<salg>/<shex>/<alg>/<hex>    descriptor JSON of a referrer
    v1/repositories/<name>/_uploads/<id>/data                      bytes received so far
    v1/repositories/<name>/_uploads/<id>/startedat                 upload state (JSON)
    v1/repositories/<name>/_uploads/<id>/verifying                 bytes being verified (disk)
    v1/usage/<rule id>/blobs/<alg>/<hex>/<size>/<name with + for />  a quota rule counts that blob
    v1/usage/<rule id>/built                                       when the rule was last rebuilt
    v1/jobs/<job>/last                                             a lifecycle job's last run (JSON)
    v1/logouts/<sha256 of a user name>                             when the user last logged out of the console
    v1/journals/<journal>/<YYYY-MM-DD>/<time>-<writer>-<seq>        a batch of records (JSON lines)
    v1/queues/<queue>/items/<time>-<id>                            an item waiting (e.g. a webhook event)
    v1/queues/<queue>/lease                                        who works through the queue now
    v1/index/repositories/<name in chunks>                         the catalog lists that repository
    v1/index/tags/<name>/_tags/<tag in chunks>                     its tags/list lists that tag
                                                                   (those two: storage.index_keys)

A link's content is the digest it points at. Manifests are stored as blobs in the CAS too.
Repository names are validated here (defence in depth: handlers validate first), so no key can
leave the root: names, tags, digests and upload ids all have grammars without `.`-only or `/`-led
components.

Reading keys back (what a walk or listing found) is done here too (`blob_data_digest`,
`layer_link_digest`, `is_data_dir`…), so no other module knows a component's name or position.
"""

from __future__ import annotations

import hashlib
import re

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.reference import is_tag, validate_repository_name, validate_tag

ROOT = "v1"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"
#: A repository's data directories start with this (repository name components cannot), which is
#: how a walk of REPOSITORIES tells a nested repository (`a/b`) from `a`'s own data.
DATA_DIR_PREFIX = "_"
LAYERS_DIR = "_layers"
MANIFESTS_DIR = "_manifests"
REFERRERS_DIR = "_referrers"
UPLOADS_DIR = "_uploads"

UPLOAD_ID_PATTERN = re.compile(r"^[a-zA-Z0-9-]{8,64}$")


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/data"


def blob_data_digest(key: str) -> Digest | None:
    """The digest a CAS key (`v1/blobs/<alg>/<xx>/<hex>/data`, as a walk of BLOBS yields) names;
    None for anything else lying there."""
    parts = key.split("/")
    if len(parts) < 6 or parts[-1] != "data":
        return None
    return digest_from_parts(parts[-4], parts[-2])


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{validate_repository_name(name)}"


def is_data_dir(component: str) -> bool:
    """Whether a component directly below a repository's key is one of its data directories."""
    return component.startswith(DATA_DIR_PREFIX)


def layers(name: str) -> str:
    return f"{repository(name)}/{LAYERS_DIR}"


def layer(name: str, digest: Digest) -> str:
    """The directory of a repository's link to a blob (what unlinking removes)."""
    return f"{layers(name)}/{digest.algorithm}/{digest.hex}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{layer(name, digest)}/link"


def layer_link_digest(key: str) -> Digest | None:
    """The digest a layer link key (`…/_layers/<alg>/<hex>/link`, as a walk of REPOSITORIES
    yields) names; None for any other key."""
    parts = key.split("/")
    if len(parts) < 4 or parts[-1] != "link" or parts[-4] != LAYERS_DIR:
        return None
    return digest_from_parts(parts[-3], parts[-2])


def manifests(name: str) -> str:
    return f"{repository(name)}/{MANIFESTS_DIR}"


def manifest_revision(name: str, digest: Digest) -> str:
    return f"{manifests(name)}/revisions/{digest.algorithm}/{digest.hex}"


def manifest_revision_link(name: str, digest: Digest) -> str:
    return f"{manifest_revision(name, digest)}/link"


def manifest_media_type(name: str, digest: Digest) -> str:
    return f"{manifest_revision(name, digest)}/mediatype"


def manifest_revisions(name: str) -> str:
    return f"{manifests(name)}/revisions"


def tags(name: str) -> str:
    return f"{manifests(name)}/tags"


def tag(name: str, tag_name: str) -> str:
    return f"{tags(name)}/{validate_tag(tag_name)}"


def tag_current_link(name: str, tag_name: str) -> str:
    return f"{tag(name, tag_name)}/current/link"


def referrers(name: str, subject: Digest) -> str:
    return f"{repository(name)}/{REFERRERS_DIR}/{subject.algorithm}/{subject.hex}"


def referrer(name: str, subject: Digest, digest: Digest) -> str:
    return f"{referrers(name, subject)}/{digest.algorithm}/{digest.hex}"


def is_own_key(key: str) -> bool:
    """Whether `key` is one this store writes: inside the layout (below ROOT), or directly at the
    store's root (the drivers' start-up probes and their temp files). Anything else belongs to
    someone else: an S3 bucket, even below the configured prefix, may be shared with other tools."""
    return key == ROOT or key.startswith(f"{ROOT}/") or "/" not in key


def is_upload_key(key: str) -> bool:
    """Whether `key` lies in some repository's `_uploads` area (repository name components cannot
    start with `_`, so the component can only be that data directory)."""
    return key.startswith(f"{REPOSITORIES}/") and UPLOADS_DIR in key.split("/")


def link_scope(key: str) -> tuple[str, bool] | None:
    """Whose links a delete of `key` may remove: (name, False) inside repository `name`'s data,
    (prefix, True) at or above a repository (it and those below it; "" all), None where no link can be."""
    inner = key.strip("/")
    if inner and f"{REPOSITORIES}/".startswith(f"{inner}/"):
        return "", True
    if not inner.startswith(f"{REPOSITORIES}/"):
        return None
    parts = inner[len(REPOSITORIES) + 1:].split("/")
    data = next((at for at, part in enumerate(parts) if is_data_dir(part)), None)
    if data is None:
        return "/".join(parts), True
    return None if data == 0 or parts[data] == UPLOADS_DIR else ("/".join(parts[:data]), False)


def uploads(name: str) -> str:
    return f"{repository(name)}/{UPLOADS_DIR}"


def upload_owner(key: str) -> tuple[str, str] | None:
    """(repository, upload id) of a key in some repository's `_uploads` area; None for any other."""
    if not is_upload_key(key):
        return None
    parts = key[len(REPOSITORIES) + 1:].split("/")
    at = parts.index(UPLOADS_DIR)
    if at == 0 or at + 1 >= len(parts) or not UPLOAD_ID_PATTERN.fullmatch(parts[at + 1]):
        return None
    return "/".join(parts[:at]), parts[at + 1]


def upload(name: str, upload_id: str) -> str:
    if not UPLOAD_ID_PATTERN.fullmatch(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return f"{uploads(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/data"


def upload_verifying(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/verifying"


def upload_state(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/startedat"


def digest_from_parts(algorithm: str, hex_: str) -> Digest | None:
    """The digest an `<alg>/<hex>` pair of key components names, or None."""
    try:
        return Digest.parse(f"{algorithm}:{hex_}")
    except OCIValidationError:
        return None


# -- usage markers (storage.usage): one per (quota rule, blob, repository linking it) -----------
USAGE = f"{ROOT}/usage"
_RULE_ID = re.compile(r"^[0-9a-f]{8,64}$")


def usage_rule(rule_id: str) -> str:
    if not _RULE_ID.fullmatch(rule_id):
        raise ValueError(f"invalid usage rule id {rule_id!r}")
    return f"{USAGE}/{rule_id}"


def usage_built(rule_id: str) -> str:
    return f"{usage_rule(rule_id)}/built"


def usage_blobs(rule_id: str) -> str:
    return f"{usage_rule(rule_id)}/blobs"


def usage_blob(rule_id: str, digest: Digest) -> str:
    return f"{usage_blobs(rule_id)}/{digest.algorithm}/{digest.hex}"


def usage_marker(rule_id: str, digest: Digest, size: int, name: str) -> str:
    # Repository names hold no `+`, so it stands for `/`: one key component per repository.
    return f"{usage_blob(rule_id, digest)}/{int(size)}/{validate_repository_name(name).replace('/', '+')}"


def usage_marker_parts(key: str) -> tuple[Digest, int, str] | None:
    """(digest, size, repository) of a usage marker key (a walk of `usage_blobs` yields); else None."""
    parts = key.split("/")
    if len(parts) < 5 or not parts[-2].isdigit():
        return None
    digest = digest_from_parts(parts[-4], parts[-3])
    return None if digest is None else (digest, int(parts[-2]), parts[-1].replace("+", "/"))


def layer_link_owner(key: str) -> tuple[str, Digest] | None:
    """(repository, digest) of a layer link key as a walk of REPOSITORIES yields it; else None."""
    digest = layer_link_digest(key)
    if digest is None or not key.startswith(f"{REPOSITORIES}/"):
        return None
    parts = key[len(REPOSITORIES) + 1:].split("/")
    if len(parts) < 5:
        return None
    return "/".join(parts[:-4]), digest


# -- garbage collection (storage.gc, storage.sweeping, storage.lease) ----------------------------
#
#    v1/gc/lease                          which collector sweeps now, until when (storage.lease)
#    v1/gc/sweeps/<collector>             a collection's notice: its phase and expiry
#    v1/gc/sweeps/<collector>.finished.<ms>  the mark it leaves when it ends: when (ms since the epoch)
#    v1/gc/doomed/<collector>             the digests it may delete (written once, before deleting)
#    v1/gc/kept/<collector>/<alg>/<hex>   a writer linked that digest while the collection marked
GC = f"{ROOT}/gc"
GC_LEASE = f"{GC}/lease"
GC_SWEEPS = f"{GC}/sweeps"
GC_DOOMED = f"{GC}/doomed"
GC_KEPT = f"{GC}/kept"
_HOLDER = re.compile(r"^[a-zA-Z0-9-]{8,64}$")
_FINISHED = ".finished."
_MILLIS = re.compile(r"[0-9]{1,15}")  # ASCII digits only, and no time past the year 33000


def _holder(holder: str) -> str:
    if not _HOLDER.fullmatch(holder):
        raise ValueError(f"invalid collector id {holder!r}")
    return holder


def gc_sweep(holder: str) -> str:
    return f"{GC_SWEEPS}/{_holder(holder)}"


def gc_sweep_holder(key: str) -> str | None:
    """The collector a key of GC_SWEEPS (as a listing yields it) belongs to; None for debris."""
    return name if _HOLDER.fullmatch(name := key.rsplit("/", 1)[-1]) else None


def gc_sweep_finished(holder: str, ended: float) -> str:
    """The mark a collection leaves when it ends (storage.sweeping): its id and when, in the key
    itself, so that one listing tells a writer which collections ended and when."""
    return f"{GC_SWEEPS}/{_holder(holder)}{_FINISHED}{int(ended * 1000)}"


def gc_sweep_finished_of(key: str) -> tuple[str, float] | None:
    """(collector, when it ended) of a finished mark as a listing of GC_SWEEPS yields it; None for
    anything else."""
    holder, found, millis = key.rsplit("/", 1)[-1].partition(_FINISHED)
    if not found or not _HOLDER.fullmatch(holder) or not _MILLIS.fullmatch(millis):
        return None
    return holder, int(millis) / 1000


def gc_doomed(holder: str) -> str:
    return f"{GC_DOOMED}/{_holder(holder)}"


def gc_kept(holder: str) -> str:
    return f"{GC_KEPT}/{_holder(holder)}"


def gc_kept_digest(holder: str, digest: Digest) -> str:
    return f"{gc_kept(holder)}/{digest.algorithm}/{digest.hex}"


def gc_kept_digest_of(key: str) -> Digest | None:
    """The digest a key below `gc_kept(holder)` names; None for anything else."""
    parts = key.split("/")
    return digest_from_parts(parts[-2], parts[-1]) if len(parts) >= 2 else None


def manifest_revision_owner(key: str) -> tuple[str, Digest] | None:
    """(repository, digest) of a revision link key (`…/_manifests/revisions/<alg>/<hex>/link`) as
    a walk of REPOSITORIES yields it; None for any other key."""
    parts = key.split("/")
    if (len(parts) < 8 or parts[-1] != "link" or parts[-4] != "revisions" or parts[-5] != MANIFESTS_DIR
            or not key.startswith(f"{REPOSITORIES}/")):
        return None
    digest = digest_from_parts(parts[-3], parts[-2])
    return None if digest is None else ("/".join(parts[2:-5]), digest)


def tag_link_owner(key: str) -> tuple[str, str] | None:
    """(repository, tag) of a tag link key (`…/_manifests/tags/<tag>/current/link`) as a walk of
    REPOSITORIES yields it; None for any other key."""
    parts = key.split("/")
    if (len(parts) < 8 or parts[-1] != "link" or parts[-2] != "current" or parts[-4] != "tags"
            or parts[-5] != MANIFESTS_DIR or not key.startswith(f"{REPOSITORIES}/") or not is_tag(parts[-3])):
        return None
    return "/".join(parts[2:-5]), parts[-3]


# -- lifecycle job records, journals and queues (storage.runs, storage.journal, storage.queue) -----
JOBS = f"{ROOT}/jobs"
JOURNALS = f"{ROOT}/journals"
QUEUES = f"{ROOT}/queues"
#: A job's, journal's or queue's name, and a writer's or item's id: one safe key component each.
_COMPONENT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def _component(value: str, what: str) -> str:
    if not _COMPONENT.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def job_last_run(job: str) -> str:
    return f"{JOBS}/{_component(job, 'job name')}/last"


LOGOUTS = f"{ROOT}/logouts"


def logout(user: str) -> str:
    """A user's logout record; the name is hashed (user names are not key grammar)."""
    return f"{LOGOUTS}/{hashlib.sha256(user.encode()).hexdigest()}"


def journal(name: str) -> str:
    return f"{JOURNALS}/{_component(name, 'journal name')}"


def journal_day(name: str, day: str) -> str:
    """`day` is `YYYY-MM-DD` (UTC): a journal is listed a day at a time."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise ValueError(f"invalid journal day {day!r}")
    return f"{journal(name)}/{day}"


def journal_batch(name: str, day: str, stamp: str) -> str:
    """A batch's key: `stamp` (`<HHMMSS.ffffff>-<writer>-<seq>`) sorts batches by time within a day."""
    return f"{journal_day(name, day)}/{_component(stamp, 'journal batch')}"


def queue(name: str) -> str:
    return f"{QUEUES}/{_component(name, 'queue name')}"


def queue_items(name: str) -> str:
    return f"{queue(name)}/items"


def queue_item(name: str, item: str) -> str:
    """`item` (`<zero-padded time>-<id>`) sorts items by the time they were queued."""
    return f"{queue_items(name)}/{_component(item, 'queue item')}"


def queue_lease(name: str) -> str:
    return f"{queue(name)}/lease"
