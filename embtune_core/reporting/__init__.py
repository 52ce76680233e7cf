"""Reports: JSON, Markdown and HTML evaluation reports, their verdict, figures, training curves and examples,
a run's own wording, the model card.
"""
