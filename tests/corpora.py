"""Small document folders for end-to-end runs: one text file per topic, three paragraphs each."""

from __future__ import annotations

from pathlib import Path

TOPICS = ["volcano", "glacier", "desert", "reef", "forest", "tundra", "canyon", "delta", "prairie", "marsh"]


def topic_corpus(folder: Path, topics: list[str] = TOPICS) -> Path:
    """``folder`` holding ``NN-topic.txt`` for each topic: six sentences naming feature ``topicJ``."""
    folder.mkdir()
    for i, topic in enumerate(topics):
        sentences = [f"The {topic} number {j} has feature {topic}{j} that visitors of the {topic} remember."
                     for j in range(6)]
        (folder / f"{i:02d}-{topic}.txt").write_text("\n\n".join(" ".join(sentences[k:k + 2])
                                                               for k in range(0, 6, 2)))
    return folder
