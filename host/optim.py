"""Optimizers for the float trainer: SGD with (Nesterov) momentum, and Adam.

Runs on: host.

Each optimizer holds references to the parameter arrays it was given and updates them in place
with `step(grads)`, where `grads` lists the gradients in the same order as the parameters.
"""

import numpy as np


class SGD:
    """Stochastic gradient descent with momentum: v = momentum * v - lr * g; p += v.

    With `nesterov=True` the step looks ahead along the velocity: p += momentum * v - lr * g.
    """

    def __init__(self, params, lr=0.01, momentum=0.9, nesterov=False):
        self.params = params
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads):
        for p, v, g in zip(self.params, self.v, grads, strict=True):
            v *= self.momentum
            v -= self.lr * g
            if self.nesterov:
                p += self.momentum * v - self.lr * g
            else:
                p += v


class Adam:
    """Adam (Kingma & Ba, 2015): running means of the gradient and its square, bias-corrected.

    m = beta1 * m + (1 - beta1) * g;  s = beta2 * s + (1 - beta2) * g**2
    p -= lr_t * m / (sqrt(s) + eps),  lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.s = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        for p, m, s, g in zip(self.params, self.m, self.s, grads, strict=True):
            m *= self.beta1
            m += (1 - self.beta1) * g
            s *= self.beta2
            s += (1 - self.beta2) * (g * g)
            p -= lr_t * m / (np.sqrt(s) + self.eps)


# name -> constructor(params, lr, momentum); Adam's first-moment decay is its own beta1.
OPTIMIZERS = {
    "sgd": lambda params, lr, momentum: SGD(params, lr, momentum),
    "nesterov": lambda params, lr, momentum: SGD(params, lr, momentum, nesterov=True),
    "adam": lambda params, lr, momentum: Adam(params, lr),
}
