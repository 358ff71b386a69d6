"""What JPEG compression costs a recorded run's network: its test images
compressed once more at several JPEG qualities, the accuracy of every exit
and of the run's calibrated thresholds on each, beside the images as read.

    python benchmarks/jpeg_cost.py results/paper/RUN [RUN ...]
        [--qualities 95,75,50,30] [--samples N]

The runs must have trained on an image-folder copy of CIFAR-10 (e.g. the
JPEG copy); ``$BRANCHYNET_CIFAR10`` (or ``--cifar10``) names it and its
checksum must be the run's. Each test image is taken as the copy holds it
(8-bit RGB), written again as a JPEG of quality Q with Pillow (its default
4:2:0 chroma subsampling) and read back, then preprocessed exactly as the
run's data (``datasets.pcifar10``: pixels / 255, the training images'
per-pixel mean subtracted, global contrast normalisation). Printed per
quality: the peak signal-to-noise ratio of the recompressed pixels against
the copy's (per image, averaged over the images), the per-channel standard
deviation of the recompressed test pixels (the copy's README compares
these with the official set's), and the accuracy of every exit alone and
of the run's calibrated row, with its exit shares.

This measures how much a further compression costs a network trained on
the JPEG copy. It is not the cost of the copy's own compression (the
official pixels are not available here). As a yardstick for the size of
that compression, the script first compresses 32x32 thumbnails of
scikit-image's PNG sample photos (``PHOTOS``; each photo whole and cut into
2x2 and 3x3 squares, box-downscaled) once at quality ``ORIGINAL_QUALITY``
(the copy's, about 75) and prints the PSNR against the originals, beside
the PSNR of compressing those compressed thumbnails again at each chosen
quality (against the once-compressed ones, as the copy's images are
measured; every PSNR here is per image, averaged).
"""
import argparse
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from recorded_rows import read_run, settings_of  # noqa: E402

import numpy  # noqa: E402

#: The JPEG quality the copy was written with (its README: about 75).
ORIGINAL_QUALITY = 75
#: scikit-image's colour sample photos shipped as PNG files (lossless; its
#: 'rocket', 'hubble_deep_field' and 'retina' are JPEG files, left out).
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'immunohistochemistry')


def thumbnails():
    """uint8 ``(N, 3, 32, 32)`` thumbnails of ``PHOTOS``: each photo's largest
    top-left square whole and cut into 2x2 and 3x3 squares, box-downscaled."""
    import skimage.data
    from PIL import Image
    out = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)()[..., :3])
        side = min(image.size)
        for k in (1, 2, 3):
            step = side // k
            out += [numpy.asarray(image.crop((j * step, i * step, (j + 1) * step,
                                              (i + 1) * step)).resize((32, 32), Image.BOX))
                    for i in range(k) for j in range(k)]
    return numpy.stack(out).transpose(0, 3, 1, 2)


def yardstick(qualities):
    """Lines: the mean PSNR of one compression at ``ORIGINAL_QUALITY`` of the
    thumbnails, and of a second compression at each of ``qualities``."""
    photos = thumbnails()
    once = recompress(photos, ORIGINAL_QUALITY)
    lines = ['yardstick: {} thumbnails (32x32) of scikit-image photos; mean PSNR of one JPEG '
             'compression at Q{} against the originals: {:.2f} dB'.format(
                 len(photos), ORIGINAL_QUALITY, _mean_psnr(photos, once))]
    lines += ['  compressed again at Q{}, against the once-compressed: {:.2f} dB'.format(
        q, _mean_psnr(once, recompress(once, q))) for q in qualities]
    return lines


def _mean_psnr(a, b):
    return float(numpy.mean([psnr(x, y) for x, y in zip(a, b)]))


def recompress(pixels, quality):
    """uint8 ``(N, 3, H, W)`` images written as JPEG of ``quality`` and read back."""
    from PIL import Image
    out = numpy.empty_like(pixels)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format='JPEG', quality=quality)
        buffer.seek(0)
        out[i] = numpy.asarray(Image.open(buffer).convert('RGB')).transpose(2, 0, 1)
    return out


def psnr(a, b):
    """Peak signal-to-noise ratio in dB of two uint8 arrays (over all their values)."""
    mse = numpy.mean((a.astype(numpy.float64) - b.astype(numpy.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * numpy.log10(255. ** 2 / mse)


def copy_pixels(results, cifar10):
    """The run's image-folder copy decoded (``imagefolder.Decoded``: uint8
    pixels, labels, checksum), checked against the run's recorded checksum."""
    from datasets import imagefolder
    from datasets.cifar10 import CLASSES
    recorded = results['data'].get('source_sha256')
    if not recorded:
        raise SystemExit('jpeg_cost: this run trained on the official files, not on an '
                         'image-folder copy')
    found = imagefolder.load(cifar10, classes=CLASSES)
    if found.sha256 != recorded:
        raise SystemExit('jpeg_cost: {} has sha256 {}, the run used {}; name the copy the run '
                         'used (--cifar10 or $BRANCHYNET_CIFAR10)'.format(
                             cifar10, found.sha256, recorded))
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='+', metavar='RUN', help='a recorded run\'s folder')
    p.add_argument('--qualities', default='90,50,30,20',
                   help='JPEG qualities to recompress at, comma-separated (1-95)')
    p.add_argument('--samples', type=int, default=None,
                   help='the first N test images (default: all)')
    p.add_argument('--cifar10', default=os.environ.get('BRANCHYNET_CIFAR10'),
                   help='the image-folder copy the runs used (default $BRANCHYNET_CIFAR10)')
    args = p.parse_args()
    try:
        qualities = [int(q) for q in args.qualities.split(',')]
    except ValueError:
        p.error('--qualities takes whole numbers separated by commas, got {!r}'.format(
            args.qualities))
    if not all(1 <= q <= 95 for q in qualities):
        p.error('--qualities must lie in 1-95 (Pillow advises against more than 95), got '
                '{}'.format(qualities))
    if args.samples is not None and args.samples < 1:
        p.error('--samples must be 1 or more, got {}'.format(args.samples))
    if not args.cifar10:
        p.error('name the image-folder copy the runs used: --cifar10 PATH or '
                '$BRANCHYNET_CIFAR10')
    import branchynet  # noqa: F401
    from branchynet.engines.fast import FastBranchyNet
    from branchynet.engines.numba import processor
    from branchynet.io import fileio
    from datasets import imagefolder, pcifar10
    model, vector = processor()
    print('processor: {}; vector extensions: {}; OPENBLAS_CORETYPE={}'.format(
        model, vector, os.environ.get('OPENBLAS_CORETYPE', 'unset')))
    print('\n'.join(yardstick(qualities)))
    runs = [(folder,) + read_run(folder) for folder in args.runs]
    data = copy_pixels(runs[0][2], args.cifar10)
    test = data.x_test[:args.samples]
    labels = data.y_test[:args.samples]
    mean = pcifar10.pixel_mean(imagefolder.to_float(data.x_train))
    versions = [('as read', test)] + [('Q{}'.format(q), recompress(test, q)) for q in qualities]
    print('data: {} test images of {} (sha256 {})'.format(len(test), args.cifar10, data.sha256))
    print('{:>8} {:>9} {:>24}'.format('images', 'PSNR dB', 'std per channel'))
    inputs = {}
    for name, pixels in versions:
        std = (pixels.astype(numpy.float64) / 255.).std(axis=(0, 2, 3))
        print('{:>8} {:>9.2f} {:>24}'.format(name, _mean_psnr(test, pixels),
                                             ' / '.join('{:.4f}'.format(s) for s in std)))
        inputs[name] = pcifar10.normalize(imagefolder.to_float(pixels), mean)
    for folder, net_name, results, weights in runs:
        if results['data'].get('source_sha256') != data.sha256:
            raise SystemExit('jpeg_cost: {} used another copy of the data'.format(folder))
        module = __import__('networks.' + net_name, fromlist=['get_network'])
        net = module.get_network()
        fileio.load_npz(weights, net)
        net.testing()
        engine = FastBranchyNet(net)
        calibrated = settings_of(results).get('calibrated')
        print('\n{} ({}); calibrated T = {}'.format(net_name, folder, calibrated))
        head = ' '.join('{:>9}'.format('exit {}'.format(i + 1)) for i in range(net.numexits()))
        print('{:>8} {} {:>11} {:>22}'.format('images', head, 'calibrated', 'exit shares (%)'))
        rows = [(name,) + evaluate(engine, inputs[name], labels, calibrated)
                for name, _ in versions]
        for name, accs, cal, shares in rows:
            print('{:>8} {} {:>11.2f} {:>22}'.format(
                name, ' '.join('{:>9.2f}'.format(a) for a in accs), cal, shares))
        _, base_accs, base_cal, _ = rows[0]
        print('  change from the images as read (points): ' + '; '.join(
            '{}: last exit {:+.2f}, calibrated {:+.2f}'.format(
                name, accs[-1] - base_accs[-1], cal - base_cal)
            for name, accs, cal, _ in rows[1:]))


def evaluate(engine, x, labels, thresholds):
    """``(accuracy % of every exit alone, accuracy % at thresholds, exit shares
    text)``; NaN and '-' without thresholds."""
    logits = engine.batched(x, 500, engine.all_exit_logits)
    accs = [100. * (z.argmax(axis=1) == labels).mean() for z in logits]
    if thresholds is None:
        return accs, float('nan'), '-'
    got, exits = engine.predict(x, thresholds, batchsize=500)
    shares = ' / '.join('{:.1f}'.format(100. * (exits == e).mean())
                        for e in range(len(logits)))
    return accs, 100. * (got == labels).mean(), shares


if __name__ == '__main__':
    main()
