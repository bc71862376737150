"""``dextr train``: train a DEXTR model into a job directory (options: the [train] schema)."""
from ._training import make_command

train = make_command("train", """Train a DEXTR model; outputs go to <jobs dir>/JOB_NAME (config.toml, log.txt, metrics.jsonl, checkpoints/).

    Every option can also come from the config's \\[train] table; the command line wins. Ctrl-C (or SIGTERM) stops at the end of the running step, saves checkpoints/last.pt and prints the command that resumes the job. --nproc N (or torchrun) trains with N processes.

    Examples:

      dextr train voc --dataset pascal_voc --arch resunet101

      dextr train peds --dataset custom_label --image-pat 'data/images/*.png' --target-pat 'data/labels/*.png' --val-image-pat 'val/images/*.png' --val-target-pat 'val/labels/*.png' --arch resunet18 --target-size 128 --no-pretrained --opt-type adam --learning-rate 1e-3

      dextr train peds --resume --num-epochs 200

      torchrun --nproc-per-node 4 -m dextr_cli train voc --dataset pascal_voc --batch-size 4
    """)
