"""Training in the board app: a `label` trains the model on the last window, prints its `train`
line, then rehearses one stored window; checkpoints on `save`, on autosave, and `reset-model`.

Runs on: board and host (MicroPython >= 1.22; CPython).

    learner = app.attach_trainer(trainer, rehearsal)   # App makes it (device/app.py)
    learner.learn(raw, k)     # raw: the window's int features; k: the class index
    learner.save()            # -> (slot path, seq), also kept in .checkpoint and .seq

`trainer` is a device.train.Trainer, or anything with its interface: `step(raw, label,
count=1) -> [predicted class, correct 0/1]` (the same list every call; count 0: a step that
`steps` and `accuracy()` leave out), `steps`, `n_correct`, `accuracy()` (percent),
`save() -> (slot path, seq)`, `load()`, `reset()` and `mode` (its name in `info`).
`rehearsal` is a device.rehearsal.Rehearsal or None (board.py loads one when the hidden layers
learn): after each labelled step comes the step `step(raw, window, 0)` on rehearsal window
(steps - 1) mod n, `steps` counting the labelled ones, so that a loaded checkpoint goes on in
order.

Autosave (board.json "autosave" N > 0): `save_due()` once the trainer's `steps` are N past
the last save or the checkpoint loaded at the start.

`learn` allocates nothing (tests run it under heap_lock): the step, the `train` line written
into the app's LineWriter, and the rehearsal step, whose window overwrites `raw`. A save or a
reset imports the checkpoint code (device/train_state.py, checkpoint.py, train_plan.py, and
modelfile.py for a reset) and drops it again (`drop_checkpoint_code`): the running app does
not keep its ~10 kB, and a save costs that import from flash.
"""


class Learner:
    """The app's training on labels and its checkpoints (see the module doc)."""

    def __init__(self, trainer, rehearsal, writer, names, autosave):
        self.trainer = trainer
        self.rehearsal = rehearsal
        self.writer = writer
        self.names = names  # class names in bytes, as the train line puts them
        self.autosave = autosave  # save every this many steps (0: only on `save`)
        self.saved_at = trainer.steps  # the trainer's steps at the last save or load
        self.checkpoint = "none"  # the slot last loaded or saved, and its sequence number
        self.seq = 0

    def learn(self, raw, k):
        """One training step on the features `raw` with class index k, its `train` line, and
        the rehearsal step (`raw` then holds the rehearsal window)."""
        t = self.trainer
        correct = t.step(raw, k)[1]
        self.writer.train(t.steps, self.names[k], correct, t.accuracy())
        rh = self.rehearsal
        if rh is not None:
            t.step(raw, rh.window_into(t.steps - 1, raw), 0)

    def save_due(self):
        """Has autosave's number of steps passed since the last save?"""
        return self.autosave and self.trainer.steps - self.saved_at >= self.autosave

    def save(self):
        """Checkpoint now -> (slot path, seq); raises what the trainer's save raises."""
        try:
            self.checkpoint, self.seq = self.trainer.save()
        finally:
            drop_checkpoint_code()
        self.saved_at = self.trainer.steps
        return self.checkpoint, self.seq

    def reset(self):
        """Back to the exported weights, no checkpoint (the trainer clears its slots)."""
        try:
            self.trainer.reset()
        finally:
            drop_checkpoint_code()
        self.saved_at = 0
        self.checkpoint, self.seq = "none", 0


def drop_checkpoint_code():
    """Forget the modules a save or reset imported (device/train_state.py, checkpoint.py,
    train_plan.py, modelfile.py): the running app keeps none of their code between saves."""
    from .board import unload

    for name in CHECKPOINT_CODE:
        unload(name)


CHECKPOINT_CODE = ("train_state", "checkpoint", "modelfile", "train_plan")
