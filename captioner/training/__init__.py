"""Layer 5, training: the loop, the objectives, checkpoints, distribution.

    loop.py        train(): a run, top to bottom
    prepare.py     the model, the image features, the caption pairs, the attention-supervision targets
    trainer.py     Trainer: the optimizer and the compiled training steps, one per objective
    objectives.py  the losses: cross-entropy + attention penalty, attention supervision, hard attention, self-critical
    epochs.py      one pass over the data for each kind of training; the dev loss
    validation.py  the dev scores after each epoch
    callbacks.py   the end of each epoch with Keras callbacks: logs, checkpoints, early stopping, plateaus
    report.py      the best checkpoint on the test split
    checkpoint.py, distribute.py, reinforce.py: one atomic checkpoint file; tf.distribute; REINFORCE

Imports every lower layer (data, model, visualize, evaluation); only the command line imports it.
"""

from captioner.training.loop import train
from captioner.training.objectives import attention_supervision_loss, caption_loss
from captioner.training.prepare import caption_pairs, encode_splits
from captioner.training.trainer import Trainer, TrainingDiverged
from captioner.training.validation import score_captions

__all__ = ["Trainer", "TrainingDiverged", "attention_supervision_loss", "caption_loss", "caption_pairs", "encode_splits",
           "score_captions", "train"]
