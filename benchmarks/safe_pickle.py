"""Reading an annotation pickle through ``mmengine.load`` with mmvitscale's safe reader vs
mmengine's own ``pickle.load``.

    python benchmarks/safe_pickle.py [--images 20000] [--repeats 5] [--out FILE.json]

Dumps an mmdet-style annotation file with ``mmengine.dump`` (``--images`` entries, each with a
path, sizes, two instances and numpy box / label arrays), times both readers on it (median of
``--repeats`` after one warm-up each) and prints the ratio safe / pickle. Also the peak-RSS
increase of each reader in a child process per reader (``/proc/self/clear_refs``), and the
worst memory amplification found for the safe reader: a file of one-byte empty sets (each
opcode builds a 216-byte object), its peak RSS over its size (and pickle.load's peak on it).
Writes the numbers as JSON.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r'''
import pickle, sys
import mmengine
from mmengine.fileio.handlers import PickleHandler
mmengine.load(sys.argv[3])  # imports the safe reader
from mmvitscale.cost.protocol import peak_rss_increase

def unsafe():
    with open(sys.argv[1], 'rb') as f:
        return pickle.load(f)

safe = lambda: mmengine.load(sys.argv[1])
print(peak_rss_increase(safe if sys.argv[2] == 'safe' else unsafe))
'''


def annotations(images: int) -> dict:
    rng = np.random.default_rng(0)
    return {'metainfo': {'classes': tuple(f'class{i}' for i in range(80))},
            'data_list': [{'img_path': f'train2017/{i:012d}.jpg', 'img_id': i, 'height': 480,
                           'width': 640,
                           'instances': [{'bbox': [1.0, 2.0, 30.5, 40.5], 'bbox_label': j,
                                          'ignore_flag': 0} for j in range(2)],
                           'gt_bboxes': rng.random((2, 4), dtype=np.float32),
                           'gt_labels': np.array([0, 1], dtype=np.int64)}
                          for i in range(images)]}


def peak(path: str, reader: str, small: str) -> int:
    out = subprocess.run([sys.executable, '-c', CHILD, path, reader, small], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def main(argv=None) -> dict:
    from mmvitscale.cost.protocol import median_seconds, size_and_repeats
    args = size_and_repeats(__doc__.splitlines()[0], '--images', 20_000, 1, argv)
    import pickle

    import mmengine
    with tempfile.TemporaryDirectory() as folder:
        path, small = os.path.join(folder, 'ann.pkl'), os.path.join(folder, 'small.pkl')
        mmengine.dump(annotations(args.images), path)
        mmengine.dump(annotations(1), small)
        sets = os.path.join(folder, 'sets.pkl')
        with open(sets, 'wb') as f:  # protocol 4: [MARK, EMPTY_SET x 1M, APPENDS]
            f.write(b'\x80\x04](' + b'\x8f' * 1_000_000 + b'e.')

        def unsafe():
            with open(path, 'rb') as f:
                return pickle.load(f)

        safe = median_seconds(lambda: mmengine.load(path), args.repeats)
        peer = median_seconds(unsafe, args.repeats)
        result = dict(images=args.images, file_bytes=os.path.getsize(path), safe_s=safe,
                      pickle_s=peer, ratio=safe / peer,
                      peak_safe_bytes=peak(path, 'safe', small),
                      peak_pickle_bytes=peak(path, 'pickle', small),
                      sets_file_bytes=os.path.getsize(sets),
                      sets_peak_safe_bytes=peak(sets, 'safe', small),
                      sets_peak_pickle_bytes=peak(sets, 'pickle', small))
    result['sets_amplification'] = result['sets_peak_safe_bytes'] / result['sets_file_bytes']
    print(f"{result['file_bytes'] / 2**20:.1f} MiB annotation pickle ({args.images} images): "
          f"safe {safe * 1e3:.0f} ms, pickle.load {peer * 1e3:.0f} ms, ratio "
          f"{result['ratio']:.2f}; peak RSS +{result['peak_safe_bytes'] / 2**20:.0f} / "
          f"+{result['peak_pickle_bytes'] / 2**20:.0f} MiB; 1 MB of empty sets: "
          f"+{result['sets_peak_safe_bytes'] / 2**20:.0f} MiB "
          f"({result['sets_amplification']:.0f} x its size; pickle.load "
          f"+{result['sets_peak_pickle_bytes'] / 2**20:.0f} MiB)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
