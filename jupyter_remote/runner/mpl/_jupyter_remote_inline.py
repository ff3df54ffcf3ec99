"""A matplotlib backend for runner cells: Agg drawing, ``show()`` sends the figures inline.

The worker sets ``MPLBACKEND=module://_jupyter_remote_inline`` (unless the cell's environment
names another backend); open figures are also sent at the end of every cell.
"""

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def new_figure_manager(num, *args, **kwargs):
    from matplotlib.figure import Figure

    figure_class = kwargs.pop("FigureClass", Figure)
    return new_figure_manager_given_figure(num, figure_class(*args, **kwargs))


def new_figure_manager_given_figure(num, figure):
    return FigureManagerBase(FigureCanvasAgg(figure), num)


def draw_if_interactive():
    pass


def show(*args, **kwargs):
    import _jupyter_remote_worker

    _jupyter_remote_worker.flush_figures()
