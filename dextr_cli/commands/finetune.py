"""``dextr finetune``: continue training a DEXTR model on new data (options: the [train] schema)."""
from ._training import make_command

finetune = make_command("finetune", """Fine-tune a trained DEXTR model on your data (keeps its architecture and pre-processing).

    Every layer learns at learning-rate x pretrained-lr-factor. The starting model is validated first (epoch 0 in metrics.jsonl), so you see whether fine-tuning helped. Options as for `dextr train`; they can also come from the config's \\[train] table (the command line wins).

    Examples:

      dextr finetune mine --from pascal-sbd --dataset custom_mask --image-pat 'data/*.jpg' --target-pat 'data/*_mask*.png'

      dextr finetune voc-more --from jobs/voc/checkpoints/best.pt --dataset pascal_voc --num-epochs 10

      dextr finetune mine --resume
    """)
