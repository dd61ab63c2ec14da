"""Lessons 01–03: gradient descent by hand, mini-batches and SGD, optimizers written out.

- `linreg`: linear regression's loss, its gradient and the closed-form oracle (lesson 01).
- `descent`: full-batch gradient descent and how a run ends (lesson 01).
- `minibatch`: mini-batch SGD and learning-rate schedules (lesson 02).
- `surfaces`: 2-D test functions with analytic gradients (lesson 03).
- `optim`: GD, momentum, Nesterov, RMSprop and Adam in NumPy, and races on the surfaces
  (lesson 03).
- `lab_state`: the Gradient Descent Lab page's state: URL, widgets and race config.

Import the module you need (`from maaslab.optimization.linreg import mse_gradient`). The
torch training loop and its torch.optim optimizers are `maaslab.train`; the exercises of these
lessons are graded in `maaslab.exercises`.
"""
