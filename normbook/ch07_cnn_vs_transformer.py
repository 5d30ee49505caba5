"""Chapter 7, "CNN vs Transformer": one training run of the CNN on the digits.

The Transformer's runs are the character-LM task's (`normbook.common.charlm`).
"""
from normbook.common import data
from normbook.common.models import TinyCNN
from normbook.common.train import set_seed, train_classifier


def cnn_run(*, seed, steps, batch_size, lr, norm, schedule="constant",
            eval_every=None):
    """Train TinyCNN(norm) on the digits (fixed split) -> its history (see
    `normbook.common.train.train_classifier`).

    Shown in chapter 7, "The grid".
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    model = TinyCNN(norm)
    history = train_classifier(model, x_train, y_train, x_test=x_test,
                               y_test=y_test, steps=steps,
                               batch_size=batch_size, lr=lr, seed=seed,
                               schedule=schedule, eval_every=eval_every)
    history["settings"] = dict(seed=seed, steps=steps, batch_size=batch_size,
                               lr=lr, norm=norm, schedule=schedule)
    return history
