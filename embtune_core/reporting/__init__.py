"""Reports: JSON, Markdown and HTML evaluation reports, their verdict, figures, training curves and examples,
how a system's model ran.
"""
