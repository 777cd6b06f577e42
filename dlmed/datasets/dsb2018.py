"""DSB2018 nuclei (BBBC038v1 ``stage1_train``) at 96x96: download, prepare, read, and a stand-in.

The 2018 Data Science Bowl's training set holds 670 microscopy images of cell nuclei (562
grey fluorescence, 108 colour brightfield/H&E), each with one mask per nucleus. Its
canonical address is the Broad Bioimage Benchmark Collection (BBBC038v1, CC0; Caicedo et
al., Nature Methods 16:1247-1253, 2019). The labs use it as the UNet++ reference
implementation (pytorch-nested-unet, ``preprocess_dsb2018.py``) prepares it: every image
and the union of its nucleus masks resized to 96x96 (bilinear), grey images copied to three
channels, alpha dropped. Prepared layout (a folder, or the same inside a zip)::

    dsb2018_96/images/<ImageId>.png     8-bit RGB, 96x96
    dsb2018_96/masks/0/<ImageId>.png    8-bit grey, 96x96; nucleus where > 127

Where the data comes from, in order (:func:`fetch`): the folder ``dsb2018_96`` in the data
folder (:func:`dlmed.datasets.data_dir`), the zip ``dsb2018_96.zip`` there (the course's
offline copy, sha256 :data:`PREPARED_ZIP_SHA256`; read in place, so a read-only mirror
works), a hand-copied ``stage1_train.zip`` there, or a download of ``stage1_train.zip``
from :data:`REMOTE`; the last two are prepared into ``dsb2018_96`` once. BBBC publishes no
checksum for ``stage1_train.zip`` and none could be taken here, so its content is checked
instead (image and mask folders per image id).

:func:`make_synthetic` writes a stand-in with the prepared layout: bright or dark blobs on
a background. THEY ARE NOT MICROSCOPY IMAGES; they let code run offline and in tests.
:func:`for_notebook` decides which one a notebook uses. Nothing happens on import.
"""

import io
import zipfile
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dlmed.datasets import PathLike, data_dir, stand_in_settings
from dlmed.datasets._download import Remote, by_hand, download, file_checksum
from dlmed.datasets._standin import build_folder, write_marker

NAME = "DSB2018"
#: The original release at its canonical address (BBBC038v1 ``stage1_train.zip``, about 80 MB).
#: BBBC publishes no checksum for it: the content is checked when it is prepared.
REMOTE = Remote(
    url="https://data.broadinstitute.org/bbbc/BBBC038/stage1_train.zip",
    checksum=None,
    filename="stage1_train.zip",
)
#: The prepared 96x96 data as a folder in the data folder (what :func:`fetch` writes).
FOLDER = "dsb2018_96"
#: The prepared 96x96 data as one zip (the course's offline copy), read without extracting it.
PREPARED_ZIP = "dsb2018_96.zip"
#: sha256 of the course's offline copy of :data:`PREPARED_ZIP` (see ../shared/data/README.md).
PREPARED_ZIP_SHA256 = "d347def09eaba8edc6ef119b1a5c5cc9f4252fe4b9e8a37150e5b3d86d6393a0"
#: The folder :func:`make_synthetic` writes.
SYNTHETIC_FOLDER = "dsb2018_96-synthetic"
#: Side length of the prepared images.
IMAGE_SIZE = 96
#: Images a notebook gets while it is graded (real data subsampled, or the stand-in).
GRADING_IMAGES = 24
#: Images of the stand-in used for offline practice in lab mode.
SYNTHETIC_LAB_IMAGES = 240

# Bump when the drawings change, so that stand-ins made by older code are rebuilt.
_SYNTHETIC_VERSION = 1


# --- reading the prepared layout ------------------------------------------------------------


def _pairs_in(names: List[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Map image id -> member name of its image and of its mask, for names of the prepared layout."""
    images, masks = {}, {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and parts[-2] == "images" and name.endswith(".png"):
            images[PurePosixPath(name).stem] = name
        elif len(parts) >= 3 and parts[-3:-1] == ("masks", "0") and name.endswith(".png"):
            masks[PurePosixPath(name).stem] = name
    return images, masks


def _decode(data: bytes, what: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image)
    except (OSError, ValueError) as error:  # PIL: not an image, truncated
        raise ValueError(f"{what} cannot be read as a PNG ({error})") from None


def _read_prepared(path: Path, limit_ids: Optional[List[str]] = None) -> dict:
    """Read the prepared layout from a folder or a zip; see :func:`load` for what is returned.

    Raises:
        ValueError: the layout or an image is not as described; the message says what.
    """
    if path.is_dir():
        names = [str(p.relative_to(path).as_posix()) for p in path.rglob("*.png")]

        def read(name):
            return (path / name).read_bytes()

        archive = None
    else:
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as error:
            raise ValueError(f"it cannot be opened as a zip ({error})") from None
        names = archive.namelist()

        def read(name):
            return archive.read(name)

    try:
        images, masks = _pairs_in(names)
        if not images:
            raise ValueError("it holds no images/<id>.png")
        unmatched = sorted(set(images) ^ set(masks))
        if unmatched:
            raise ValueError(f"{len(unmatched)} image id(s) lack an image or a mask, e.g. {unmatched[0]!r}")
        all_ids = sorted(images)
        ids = all_ids if limit_ids is None else [i for i in limit_ids if i in images]
        pictures = np.zeros((len(ids), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        labels = np.zeros((len(ids), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for index, image_id in enumerate(ids):
            picture = _decode(read(images[image_id]), f"the image of {image_id}")
            mask = _decode(read(masks[image_id]), f"the mask of {image_id}")
            if picture.ndim == 2:
                picture = np.repeat(picture[..., None], 3, axis=2)
            if picture.shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or mask.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
                raise ValueError(
                    f"{image_id}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image and grey mask, got "
                    f"{picture.shape} and {mask.shape}"
                )
            if mask.ndim == 3:
                mask = mask[..., 0]
            pictures[index] = picture
            labels[index] = mask > 127
    finally:
        if archive is not None:
            archive.close()
    if limit_ids is not None and not limit_ids:
        return {"all_ids": all_ids}
    return {"ids": ids, "images": pictures, "masks": labels}


def _prepared_folder_ok(folder: Path) -> bool:
    """True if ``folder`` has images/ and masks/0/ with at least one PNG each (the prepared layout)."""
    return (next((folder / "images").glob("*.png"), None) is not None
            and next((folder / "masks" / "0").glob("*.png"), None) is not None)


def find(root: Optional[PathLike] = None) -> Optional[Path]:
    """Return the prepared data in ``root``: the folder ``dsb2018_96`` or else ``dsb2018_96.zip``; else None.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. Contents are not checked here
    (:func:`fetch` does). Nothing is downloaded or created.
    """
    root = Path(root if root is not None else data_dir())
    if _prepared_folder_ok(root / FOLDER):
        return root / FOLDER
    if (root / PREPARED_ZIP).is_file():
        return root / PREPARED_ZIP
    return None


# --- preparing the original release --------------------------------------------------------


def _resize_bilinear(array: np.ndarray) -> np.ndarray:
    """Resize (H, W, C) float32 to 96x96 like OpenCV's ``cv2.resize`` (bilinear, half-pixel centres, no antialiasing)."""
    import torch  # here: importing this module stays cheap
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                            antialias=False)
    return resized[0].permute(1, 2, 0).numpy()


def _prepare(archive_path: Path, root: Path, show_progress: bool) -> Path:
    """Prepare ``stage1_train.zip`` into ``root/dsb2018_96`` as the reference preprocessing does."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{archive_path} is not the DSB2018 stage1_train.zip: it cannot be opened as a zip ({error}). "
            f"Delete it and run again to download it from {REMOTE.url}."
        ) from None
    with archive:
        image_names, mask_names = {}, {}
        for name in archive.namelist():
            parts = PurePosixPath(name).parts
            if len(parts) == 3 and parts[1] == "images" and name.endswith(".png"):
                image_names[parts[0]] = name
            elif len(parts) == 3 and parts[1] == "masks" and name.endswith(".png"):
                mask_names.setdefault(parts[0], []).append(name)
        if not image_names or set(image_names) != set(mask_names):
            raise ValueError(
                f"{archive_path} is not the DSB2018 stage1_train.zip: it should hold <id>/images/<id>.png and "
                f"<id>/masks/*.png for every image id. Delete it and run again to download it from {REMOTE.url}."
            )

        def write(staged: Path) -> None:
            (staged / "images").mkdir()
            (staged / "masks" / "0").mkdir(parents=True)
            for image_id in tqdm(sorted(image_names), desc="Preparing DSB2018 at 96x96", disable=not show_progress):
                picture = _decode(archive.read(image_names[image_id]), f"{image_names[image_id]}")
                if picture.ndim == 2:
                    picture = np.repeat(picture[..., None], 3, axis=2)
                picture = picture[..., :3]
                union = np.zeros(picture.shape[:2], dtype=np.float32)
                for name in mask_names[image_id]:
                    union[_decode(archive.read(name), name) > 127] = 1.0
                small = np.clip(np.rint(_resize_bilinear(picture.astype(np.float32))), 0, 255).astype(np.uint8)
                small_mask = (_resize_bilinear(union[..., None])[..., 0] * 255).astype(np.uint8)
                Image.fromarray(small).save(staged / "images" / f"{image_id}.png")
                Image.fromarray(small_mask).save(staged / "masks" / "0" / f"{image_id}.png")

        return build_folder(root / FOLDER, _prepared_folder_ok, write)


def _how_to_get(root: Path) -> str:
    return (
        f"{by_hand(REMOTE, root)};\n"
        f"  or copy the course's prepared {PREPARED_ZIP} (sha256 {PREPARED_ZIP_SHA256[:16]}...) there.\n"
        f"  Outside a notebook, the stand-in is dlmed.datasets.dsb2018.make_synthetic()."
    )


def fetch(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> Path:
    """Return the prepared 96x96 data (a folder or the zip), downloading and preparing it if needed.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`. In order:

    1. ``root/dsb2018_96`` (prepared before) is returned as it is;
    2. ``root/dsb2018_96.zip`` is returned as it is when its sha256 is
       :data:`PREPARED_ZIP_SHA256`; with another checksum, its content is checked and one line
       says so (ValueError if the content is not the prepared layout);
    3. ``root/stage1_train.zip`` (copied by hand, or downloaded from :data:`REMOTE` when
       ``allow_download``) is prepared into ``root/dsb2018_96``.

    Nothing is written in cases 1 and 2, so ``root`` may be a read-only mirror.

    Raises:
        DataUnavailableError: nothing is here and it may not, or cannot, be downloaded; the
            message says how to go on.
        ValueError: a file here is not what it should be (the message says what to do).
    """
    root = Path(root if root is not None else data_dir())
    found = find(root)
    if found is not None:
        if found.name == PREPARED_ZIP and file_checksum(found, "sha256") != PREPARED_ZIP_SHA256:
            try:
                _ids_in(found)  # the layout, without decoding every image
            except ValueError as error:
                raise ValueError(
                    f"{found} is not the prepared DSB2018: {error}. Delete it, or replace it with the "
                    f"course's copy (sha256 {PREPARED_ZIP_SHA256})."
                ) from None
            print(f"dlmed: {found} is not the course's copy (its sha256 differs), but it has the prepared "
                  f"layout; using it.")
        return found
    archive = root / REMOTE.filename
    if not archive.is_file():
        archive = download(NAME, REMOTE, root, _how_to_get(root), allow_download, show_progress)
    return _prepare(archive, root, show_progress)


def _ids_in(path: Path) -> List[str]:
    """The sorted image ids of the prepared data at ``path``; ValueError unless every id has an image and a mask."""
    return _read_prepared(path, limit_ids=[])["all_ids"]


def load(root: Optional[PathLike] = None, allow_download: bool = True, show_progress: bool = True) -> dict:
    """Return the prepared DSB2018 as ``{"ids", "images", "masks", "synthetic"}``.

    ``ids``: the image ids, SORTED (so a seeded split is the same on every machine);
    ``images``: uint8 array (N, 96, 96, 3); ``masks``: uint8 array (N, 96, 96) with 1 for
    nucleus (the stored mask > 127) and 0 for background; ``synthetic``: False. The data is
    found or fetched by :func:`fetch`, which takes the same arguments.
    """
    path = fetch(root, allow_download, show_progress)
    return _read_or_explain(path)


def _read_or_explain(path: Path, limit_ids: Optional[List[str]] = None, synthetic: bool = False) -> dict:
    try:
        data = _read_prepared(path, limit_ids)
    except ValueError as error:
        raise ValueError(f"{path} is not the prepared DSB2018: {error}. Delete it and run again.") from None
    data["synthetic"] = synthetic
    return data


# --- the synthetic stand-in ----------------------------------------------------------------


def _draw(rng: np.random.Generator, colour: bool) -> Tuple[np.ndarray, np.ndarray]:
    """One 96x96 stand-in: a few ellipses ("nuclei") on a background, and their union as mask."""
    size = IMAGE_SIZE
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), dtype=bool)
    brightness = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(3, 12))):
        cy, cx = rng.uniform(6, size - 6, size=2)
        ry, rx = rng.uniform(3.5, 9.0, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = y - cy, x - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        blob = u ** 2 + v ** 2 <= 1.0
        mask |= blob
        brightness = np.maximum(brightness, blob * rng.uniform(0.5, 1.0))
    noise = rng.normal(0.0, 0.05, size=(size, size)).astype(np.float32)
    if colour:  # brightfield/H&E-like: dark purple nuclei on pink
        background = np.array([0.93, 0.75, 0.85], dtype=np.float32)
        nucleus = np.array([0.35, 0.2, 0.55], dtype=np.float32)
        picture = background + (nucleus - background) * brightness[..., None] + noise[..., None]
    else:  # fluorescence-like: bright nuclei on black, the same in all three channels
        picture = np.repeat((0.05 + 0.8 * brightness + noise)[..., None], 3, axis=2)
    picture = np.clip(picture * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return picture, (mask * 255).astype(np.uint8)


def _synthetic_settings(num_images: int, seed: int) -> dict:
    return {"synthetic": True, "dataset": NAME, "version": _SYNTHETIC_VERSION,
            "num_images": num_images, "image_size": IMAGE_SIZE, "seed": seed}


def _write_synthetic(folder: Path, settings: dict) -> None:
    (folder / "images").mkdir()
    (folder / "masks" / "0").mkdir(parents=True)
    rng = np.random.default_rng(settings["seed"])
    for index in range(settings["num_images"]):
        picture, mask = _draw(rng, colour=index % 6 == 5)  # about 1 in 6 colour, as in the real set
        name = f"synthetic{index:04d}.png"
        Image.fromarray(picture).save(folder / "images" / name)
        Image.fromarray(mask).save(folder / "masks" / "0" / name)
    (folder / "README.txt").write_text(
        "SYNTHETIC stand-in for DSB2018 nuclei (BBBC038v1) at 96x96, written by dlmed.\n"
        "These are blobs drawn on a background, NOT microscopy images. They let code run\n"
        "offline and in tests. The real data: dlmed.datasets.dsb2018.fetch().\n",
        encoding="utf-8",
    )
    write_marker(folder, settings)  # last: its presence means the folder is complete


def make_synthetic(root: Optional[PathLike] = None, num_images: int = GRADING_IMAGES, seed: int = 0) -> Path:
    """Write (or reuse) a synthetic stand-in for the prepared DSB2018 and return its folder.

    The folder ``root/dsb2018_96-synthetic`` (``root`` defaults to
    :func:`~dlmed.datasets.data_dir`) has the prepared layout (``images/<id>.png`` RGB
    96x96, ``masks/0/<id>.png``) with ``num_images`` pairs, a ``README.txt`` and a marker
    saying it is synthetic. About one image in six is "colour" (dark nuclei on pink), the
    others "fluorescence" (bright nuclei on black).

    THE IMAGES ARE NOT MICROSCOPY DATA. The same seed gives the same files; a complete
    stand-in with the same settings is reused, one with other settings replaced (atomically).
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"num_images must be an integer of at least 2, got {num_images!r}")
    root = Path(root if root is not None else data_dir())
    settings = _synthetic_settings(num_images, int(seed))
    return build_folder(root / SYNTHETIC_FOLDER,
                        lambda folder: stand_in_settings(folder) == settings and _prepared_folder_ok(folder),
                        lambda staged: _write_synthetic(staged, settings))


def _choose(ids: List[str], count: int, seed: int = 0) -> List[str]:
    """``count`` ids chosen at random (repeatably), in sorted order."""
    if len(ids) <= count:
        return list(ids)
    chosen = np.random.default_rng(seed).choice(len(ids), size=count, replace=False)
    return [ids[i] for i in sorted(chosen)]


def for_notebook(config, root: Optional[PathLike] = None, synthetic: bool = False) -> dict:
    """Return the DSB2018 data a notebook should use, given its :class:`~dlmed.config.RunConfig`.

    The result is a dict as from :func:`load`: ``ids`` (sorted), ``images`` uint8
    (N, 96, 96, 3), ``masks`` uint8 (N, 96, 96) in {0, 1}, and ``synthetic`` (bool).

    - ``synthetic=True`` (the notebook's ``USE_SYNTHETIC_DATA``): the stand-in, for offline
      practice (:data:`SYNTHETIC_LAB_IMAGES` images in lab mode).
    - Grading mode: the real data if it is already in ``root`` (never written to), cut to
      :data:`GRADING_IMAGES` images chosen at random with a fixed seed, else the stand-in of
      that size. Never downloads. Prints one line saying which is used.
    - Lab mode: the whole real data, downloaded and prepared if needed and
      ``config.allow_download``; never a stand-in unless asked.

    ``root`` defaults to :func:`~dlmed.datasets.data_dir`.
    """
    root = Path(root if root is not None else data_dir())
    if not config.grading:
        if synthetic:
            return _read_or_explain(make_synthetic(root, SYNTHETIC_LAB_IMAGES), synthetic=True)
        return load(root, allow_download=config.allow_download, show_progress=config.show_progress)
    reason = "as asked" if synthetic else f"neither {FOLDER} nor {PREPARED_ZIP} is in {root}"
    found = None if synthetic else find(root)
    if found is not None:
        try:
            data = _read_or_explain(found, _choose(_ids_in(found), GRADING_IMAGES))
            print(f"dlmed: using the real {NAME} in {found} ({len(data['ids'])} images for grading)")
            return data
        except ValueError as error:
            reason = str(error)  # grading must not fail because of a damaged data file
    folder = make_synthetic(root, GRADING_IMAGES)
    print(f"dlmed: using the SYNTHETIC stand-in (not microscopy data) in {folder} ({reason})")
    return _read_or_explain(folder, synthetic=True)
