"""Data augmentation (off by default, as the original ran).

Random shifts (``epoch_shifts``, ``shift_batch``): each training image moves,
per epoch, by a random whole number of pixels in [-n, n] along each axis, the
uncovered border repeating the image's edge. Random flips (``epoch_flips``,
``flip_batch``): each training image is mirrored left to right, per epoch,
with probability 1/2. Offsets and flips are functions of (seed, epoch,
sample index) only, so every MPI rank and every resumed run draws the same
ones.

CIFAR-style variants (``augment_batch``): each training image is replaced,
per epoch, by one random variant among:
the full image or a 24x24 crop at offsets (0, 4, 8) x (0, 4, 8) scaled back
to the full size, each optionally flipped horizontally; every variant is then
contrast-normalised per image. ``AugmentedBatches`` prepares the next batch
in a worker process while the current one trains.
"""
import multiprocessing

import numpy

CROP = 24
OFFSETS = (0, 4, 8)


def epoch_shifts(seed, epoch, n_samples, max_shift):
    """The (row, column) offset of every training sample in ``epoch``: an
    int array of shape (n_samples, 2) in [-max_shift, max_shift]."""
    rng = numpy.random.RandomState([0 if seed is None else int(seed), int(epoch), 0x5f1f7])
    return rng.randint(-max_shift, max_shift + 1, size=(n_samples, 2))


def epoch_flips(seed, epoch, n_samples):
    """Whether each training sample is mirrored in ``epoch``: a bool array of
    shape (n_samples,), each True with probability 1/2."""
    rng = numpy.random.RandomState([0 if seed is None else int(seed), int(epoch), 0xf11b])
    return rng.randint(0, 2, size=n_samples).astype(bool)


def flip_batch(x, flips):
    """The (N, C, H, W) batch ``x`` with the images where ``flips`` is True
    mirrored left to right (last axis reversed), in place; returns ``x``."""
    x[flips] = x[flips][..., ::-1]
    return x


def shift_batch(x, offsets, max_shift):
    """Each (C,H,W) image of ``x`` moved by its (row, column) offset (a positive
    row offset moves the content down), the uncovered border filled with the
    image's edge values."""
    n, _, h, w = x.shape
    m = max_shift
    padded = numpy.pad(x, ((0, 0), (0, 0), (m, m), (m, m)), mode='edge')
    out = numpy.empty_like(x)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, m - dy:m - dy + h, m - dx:m - dx + w]
    return out


def contrast_normalize(x, eps=1e-8):
    """Per image: zero mean, unit standard deviation (ddof 1) over all values."""
    flat = x.reshape(len(x), -1).astype(numpy.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, ddof=1, keepdims=True)
    std[std < eps] = 1.
    return (flat / std).reshape(x.shape).astype(numpy.float32)


def variant(image, crop_index, flip):
    """One variant of a (C,H,W) image: crop_index 0 is the full image, 1..9 the
    24x24 crops at the (row, column) offsets, scaled back to (H,W)."""
    import skimage.transform  # only the CIFAR-style variants need it (slow to import)
    c, h, w = image.shape
    if crop_index:
        dy, dx = OFFSETS[(crop_index - 1) // 3], OFFSETS[(crop_index - 1) % 3]
        size = CROP * h // 32
        crop = image[:, dy:dy + size, dx:dx + size]
        image = skimage.transform.resize(crop, (c, h, w), order=1, mode='edge',
                                          anti_aliasing=False).astype(numpy.float32)
    if flip:
        image = image[:, :, ::-1]
    return image


def augment_batch(x, seed):
    """A random variant of every image of ``x``, contrast-normalised."""
    rng = numpy.random.RandomState(seed)
    crops = rng.randint(0, 1 + len(OFFSETS) ** 2, size=len(x))
    flips = rng.randint(0, 2, size=len(x)).astype(bool)
    out = numpy.stack([variant(img, c, f) for img, c, f in zip(x, crops, flips)])
    return contrast_normalize(out)


class AugmentedBatches:
    """Iterates ``(x_batch, y_batch)`` of augmented images, one batch ahead.

    A pool of ``workers`` processes augments batch i+1 while batch i is used.
    ``workers=0`` augments in the calling process.
    """

    def __init__(self, x, y, batchsize, seed=0, workers=1):
        self.x, self.y, self.batchsize = x, y, batchsize
        self.rng = numpy.random.RandomState(seed)
        self.workers = workers

    def epoch(self):
        order = self.rng.permutation(len(self.x))
        chunks = [order[i:i + self.batchsize] for i in range(0, len(order), self.batchsize)]
        seeds = self.rng.randint(0, 2 ** 31 - 1, size=len(chunks))
        jobs = [(self.x[idx], int(s)) for idx, s in zip(chunks, seeds)]
        if self.workers == 0:
            for idx, job in zip(chunks, jobs):
                yield augment_batch(*job), self.y[idx]
            return
        ctx = multiprocessing.get_context('fork')
        with ctx.Pool(self.workers) as pool:
            for idx, xb in zip(chunks, pool.imap(_augment_job, jobs)):
                yield xb, self.y[idx]


def _augment_job(job):
    return augment_batch(*job)
