"""The book's lab: the experiments that normbook's chapters run.

`normbook.common` holds what several chapters share; `normbook.chNN_<name>`
holds the runs of the chapter whose notebook is `NN_<name>.ipynb`. A chapter
module imports `normbook.common` and `normlib`, never another chapter's
module. The norms themselves are the library, `normlib`; nothing in `normlib`
imports this package.
"""
