"""Optimizers for the float trainer: SGD with (Nesterov) momentum, and Adam.

Runs on: host.

Each optimizer holds references to the parameter arrays it was given and updates them in place
with `step(grads)`, where `grads` lists the gradients in the same order as the parameters.
A step gathers every parameter and gradient into one vector, updates it, and writes it back:
the same values as array by array (every operation is elementwise), in a few NumPy calls
instead of a few per array, which is what small networks spend their time on.
"""

import numpy as np


def _gather(arrays):
    """The arrays, flattened and joined into one vector (a copy)."""
    return np.concatenate([a.ravel() for a in arrays])


def _scatter(flat, arrays):
    """Write the vector `flat` back into the arrays, in order (the inverse of _gather)."""
    i = 0
    for a in arrays:
        a[...] = flat[i : i + a.size].reshape(a.shape)
        i += a.size


class SGD:
    """Stochastic gradient descent with momentum: v = momentum * v - lr * g; p += v.

    With `nesterov=True` the step looks ahead along the velocity: p += momentum * v - lr * g.
    """

    def __init__(self, params, lr=0.01, momentum=0.9, nesterov=False):
        self.params = params
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.v = np.zeros(sum(p.size for p in params))

    def step(self, grads):
        p, g, v = _gather(self.params), _gather(grads), self.v
        v *= self.momentum
        v -= self.lr * g
        if self.nesterov:
            p += self.momentum * v - self.lr * g
        else:
            p += v
        _scatter(p, self.params)


class Adam:
    """Adam (Kingma & Ba, 2015): running means of the gradient and its square, bias-corrected.

    m = beta1 * m + (1 - beta1) * g;  s = beta2 * s + (1 - beta2) * g**2
    p -= lr_t * m / (sqrt(s) + eps),  lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        n = sum(p.size for p in params)
        self.m, self.s = np.zeros(n), np.zeros(n)
        self.t = 0

    def step(self, grads):
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        p, g, m, s = _gather(self.params), _gather(grads), self.m, self.s
        m *= self.beta1
        m += (1 - self.beta1) * g
        s *= self.beta2
        s += (1 - self.beta2) * (g * g)
        p -= lr_t * m / (np.sqrt(s) + self.eps)
        _scatter(p, self.params)


# name -> constructor(params, lr, momentum); Adam's first-moment decay is its own beta1.
OPTIMIZERS = {
    "sgd": lambda params, lr, momentum: SGD(params, lr, momentum),
    "nesterov": lambda params, lr, momentum: SGD(params, lr, momentum, nesterov=True),
    "adam": lambda params, lr, momentum: Adam(params, lr),
}
