"""The kind of text read from the rows, and the model.instruction proposed for it, on fixed inputs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from steep.config import ModelConfig, load_config
from steep.instruction import (
    DEFAULT_INSTRUCTION,
    FEW,
    GENERIC,
    INSTRUCTIONS,
    ONE,
    dateline,
    is_clause,
    is_dialogue,
    is_news,
    is_product_description,
    is_software_description,
    kind_of,
    propose_instruction,
    sentences,
    speaker_turns,
    summary_length,
)

REPO = Path(__file__).resolve().parents[2]

# (text, summary) pairs in the styles of DialogSum, SAMSum and call transcripts
DIALOGUES = [
    (
        "#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today?\n"
        "#Person2#: I found it would be a good idea to get a check-up.\n"
        "#Person1#: Yes, well, you haven't had one for 5 years. You should have one every year.\n"
        "#Person2#: I know. I figure as long as there is nothing wrong, why go see the doctor?",
        "Mr. Smith is getting a check-up, and Doctor Hawkins advises him to have one every year.",
    ),
    (
        "#Person1#: Do you want to go to the cinema tonight?\n"
        "#Person2#: I'd love to, but I have to finish my report first.\n"
        "#Person1#: How about the late show at nine?\n"
        "#Person2#: That works. I'll meet you there.",
        "#Person1# invites #Person2# to the cinema and they agree on the late show.",
    ),
    (
        "#Person1#: Excuse me, how much is this jacket?\n"
        "#Person2#: It's 80 dollars, but it's 20 percent off this week.\n"
        "#Person1#: Do you have it in a larger size?\n"
        "#Person2#: Let me check in the back for you.",
        "#Person1# asks about a discounted jacket in a larger size.",
    ),
    (
        "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)",
        "Amanda baked cookies and will bring Jerry some tomorrow.",
    ),
    (
        "A: Where were you last night? I called you three times.\n"
        "B: Sorry, my phone was off. I was at the library until late.\n"
        "A: Next time just send me a message.",
        "B was at the library with the phone off, and A asks for a message next time.",
    ),
    (
        "Speaker 1: Thanks for calling the help desk, how can I help?\n"
        "Speaker 2: My laptop won't connect to the office network.\n"
        "Speaker 1: Have you tried restarting the router?\n"
        "Speaker 2: Not yet, I'll try that now.",
        "A caller's laptop cannot connect and the help desk suggests restarting the router.",
    ),
]
# news stories with datelines; highlights of two sentences, one a line as in CNN/DailyMail
NEWS = [
    (
        "LONDON (Reuters) - British lawmakers voted on Tuesday to delay a final decision on the new rail "
        "line, officials said. The vote was 322 to 306. Transport Secretary Jane Hill told reporters she was "
        "disappointed but would bring the plan back in the autumn. Critics said the line would cost twice "
        "the original estimate. The government said it would publish a revised budget next month.",
        "Lawmakers delayed a decision on the rail line by 322 votes to 306.\n"
        "The government will publish a revised budget next month.",
    ),
    (
        "(CNN) -- A powerful storm knocked out power to more than 200,000 homes along the coast on Sunday, "
        "according to the state's emergency agency. Schools in three counties will stay closed on Monday. "
        '"We are asking people to stay off the roads," the governor said at a news conference. Forecasters '
        "expect the storm to weaken by Tuesday.",
        "A storm cut power to 200,000 homes.\nSchools in three counties stay closed on Monday.",
    ),
    (
        "WASHINGTON (AP) -- The Federal Reserve left interest rates unchanged on Wednesday and signaled it "
        "could cut them later this year. Fed Chair Maria Lopez said inflation had cooled but remained above "
        "target. Markets rose after the announcement. Economists said the decision was widely expected.",
        "The Fed held rates and signaled a cut later this year.\nMarkets rose after the announcement.",
    ),
    (
        "TOKYO (Reuters) - Japan's exports rose for a third straight month in May, government data showed on "
        "Thursday, helped by strong demand for cars and chips. Exports grew 4.1 percent from a year earlier, "
        "the finance ministry said. Analysts said a weaker yen had also helped. Imports fell 2.3 percent.",
        "Japan's exports rose 4.1 percent in May.\nA weaker yen helped, analysts said.",
    ),
    (
        "NAIROBI (AFP) - Kenya's parliament passed a budget on Friday that raises taxes on fuel and mobile "
        "money, officials said. Protesters gathered outside the building as the vote took place. The finance "
        "minister said the measures were needed to reduce borrowing. Opposition leaders vowed to challenge "
        "the law in court.",
        "Kenya passed a budget raising fuel and mobile money taxes.\n"
        "The opposition will challenge it in court.",
    ),
    (
        "BERLIN (Reuters) - German police arrested three men on Saturday suspected of planning to steal rare "
        "paintings from a Dresden museum, prosecutors said. The men were detained after a month-long "
        "investigation. A spokesman for the museum told reporters the collection was safe. The suspects are "
        "due before a judge on Monday.",
        "Police arrested three men suspected of planning a museum theft.\n"
        "The collection is safe, the museum said.",
    ),
]
# contract and terms-of-service clauses with plain-English one-sentence summaries
CLAUSES = [
    (
        "The Licensee shall not sublicense, assign or transfer the license granted hereunder without the "
        "prior written consent of the Licensor.",
        "You cannot pass this license on without written permission.",
    ),
    (
        "Either party may terminate this Agreement upon thirty (30) days' written notice to the other party. "
        "Termination shall not affect any rights accrued prior to the date of termination.",
        "Either side can end the agreement with 30 days' notice.",
    ),
    (
        "In no event shall the Company be liable for any indirect, incidental or consequential damages "
        "arising out of or in connection with your use of the Services.",
        "The company is not liable for indirect damages from using the service.",
    ),
    (
        "You agree to indemnify and hold harmless the Company and its affiliates from any claims, "
        "liabilities and expenses arising from your breach of these Terms.",
        "You pay if your breach of the terms leads to claims against the company.",
    ),
    (
        "We may modify these Terms at any time. Your continued use of the Services after the changes take "
        "effect constitutes your acceptance of the revised Terms.",
        "The terms can change at any time, and using the service means you accept them.",
    ),
    (
        "This Agreement shall be governed by the laws of the State of New York, and the parties consent to "
        "the exclusive jurisdiction of its courts.",
        "New York law governs the agreement and its courts decide disputes.",
    ),
]
# texts of no kind steep names: a recipe, a story, a textbook line
OTHER = [
    (
        "Preheat the oven to 180 degrees. Mix the flour, sugar and eggs in a large bowl, then pour the "
        "batter into a tin and bake for 40 minutes.",
        "Mix the batter and bake it for 40 minutes at 180 degrees.",
    ),
    (
        "Once upon a time a little fox lived at the edge of the forest. Every morning she ran down to the "
        "river to watch the fish jump.",
        "A little fox watches the fish in the river every morning.",
    ),
    (
        "The mitochondrion is the part of the cell where respiration takes place, turning glucose and oxygen "
        "into energy the cell can use.",
        "Mitochondria turn glucose and oxygen into energy for the cell.",
    ),
]
PRODUCT = (
    "This stainless steel water bottle keeps drinks cold for 24 hours. Made of food-grade material, it is "
    "lightweight, durable and dishwasher safe. Available in 5 colors, ideal for hiking."
)
SOFTWARE = (
    "requests is an elegant and simple HTTP library for Python. Install it with pip, send JSON bodies with "
    "one call, and plug in your own backend through its adapter interface."
)


def texts(pairs: list[tuple[str, str]]) -> list[str]:
    return [text for text, _ in pairs]


def summaries(pairs: list[tuple[str, str]]) -> list[str]:
    return [summary for _, summary in pairs]


# --------------------------------------------------------------------------------------------- one text
def test_speaker_turns_of_dialogsum_samsum_lettered_and_numbered_speakers():
    assert speaker_turns(DIALOGUES[0][0]) == ["#Person1#", "#Person2#", "#Person1#", "#Person2#"]
    assert speaker_turns(DIALOGUES[3][0]) == ["Amanda", "Jerry", "Amanda"]
    assert speaker_turns(DIALOGUES[4][0]) == ["A", "B", "A"]
    assert speaker_turns(DIALOGUES[5][0])[:2] == ["Speaker 1", "Speaker 2"]
    assert all(is_dialogue(text) for text in texts(DIALOGUES))
    joined = DIALOGUES[1][0].replace("\n", " ")  # a file that joined the turns into one line
    assert speaker_turns(joined)[:2] == ["#Person1#", "#Person2#"] and is_dialogue(joined)


def test_fields_headings_and_prose_are_not_a_dialogue():
    assert not is_dialogue("Brand: Acme\nColor: Red\nSize: Large")  # each named once: fields, not turns
    assert not is_dialogue("Note: the price includes tax.\nWarning: keep away from children.")
    assert not is_dialogue("Amanda: I baked cookies.")  # one turn
    assert not any(is_dialogue(text) for text in texts(NEWS + CLAUSES + OTHER))


def test_datelines_of_agencies_and_networks():
    assert [dateline(text) for text in texts(NEWS[:3])] == [
        "LONDON (Reuters) -",
        "(CNN) --",
        "WASHINGTON (AP) --",
    ]
    assert dateline("WASHINGTON, May 3 (AP) -- The Senate voted.") == "WASHINGTON, May 3 (AP) --"
    assert all(is_news(text) for text in texts(NEWS))
    assert dateline(CLAUSES[1][0]) is None and dateline("LIMITATION OF LIABILITY - In no event ...") is None


def test_a_long_run_of_capitals_is_no_dateline_and_is_read_at_once():
    """A dateline's words are matched whole: splitting each of them several ways took 28 s on this line."""
    shouting = "LIMITATIONOFLIABILITYINNOEVENTSHALLTHECOMPANYBELIABLEFORANYTHING " * 5
    started = time.monotonic()
    assert dateline(shouting) is None and kind_of(shouting) is None
    assert time.monotonic() - started < 1.0


def test_long_reporting_prose_is_news_without_a_dateline_and_short_prose_is_not():
    story = " ".join(
        [
            "The city council approved a plan on Monday to build three new parks by 2027.",
            "The mayor said the parks would be open to everyone, free of charge.",
            "According to officials, the plan will cost about 4 million dollars over two years.",
            "Residents who spoke at the meeting told the council they wanted more trees and benches.",
            "Work on the first park is expected to begin in the spring, a spokeswoman said.",
        ]
        * 3
    )
    assert dateline(story) is None and is_news(story) and kind_of(story) == "news"
    proposal = propose_instruction([story, *texts(NEWS[:3])])
    assert "4 of 4 rows have a dateline like 'LONDON (Reuters) -' or long multi-sentence reporting" in (
        proposal.why
    )
    assert not is_news("The mayor said the parks would open. Officials said they would be free.")
    assert not is_news(OTHER[1][0] * 10)  # long, but nobody said anything: a story, not news


def test_legal_wording_makes_a_clause_and_one_legal_word_in_news_does_not():
    assert all(is_clause(text) for text in texts(CLAUSES))
    assert kind_of(NEWS[4][0]) == "news"  # 'law' and 'court' in a Reuters-style story
    assert not is_clause("The two companies signed an agreement on Monday to build a plant in Ohio together.")
    assert not is_clause(PRODUCT) and not is_clause(SOFTWARE)


def test_product_and_software_descriptions():
    assert is_product_description(PRODUCT) and kind_of(PRODUCT) == "product"
    assert is_software_description(SOFTWARE) and kind_of(SOFTWARE) == "software"
    assert not is_software_description(PRODUCT) and not is_product_description(CLAUSES[0][0])
    assert [kind_of(text) for text in texts(OTHER)] == [None, None, None]


def test_sentences_do_not_end_at_titles_or_initials():
    assert sentences("Mr. Smith met the U.S. envoy. Then he left!\nThe end") == [
        "Mr. Smith met the U.S. envoy.",
        "Then he left!",
        "The end",
    ]
    assert len(sentences("you agree to these terms. if you are under 13 your parent agrees.")) == 2


def test_summary_length_is_one_sentence_or_a_few():
    assert summary_length(summaries(CLAUSES)) == (ONE, "6 of 6 summaries are one sentence")
    length, why = summary_length(summaries(NEWS))
    assert length == FEW and why == "summaries run to 2 sentences on the median"


# --------------------------------------------------------------------------------------------- a data set
@pytest.mark.parametrize(
    ("pairs", "kind", "instruction", "evidence"),
    [
        (
            DIALOGUES,
            "dialogue",
            "Summarize this dialogue in one sentence.",
            "speaker turns like '#Person1#:'",
        ),
        (NEWS, "news", "Summarize this news article in a few sentences.", "a dateline like '"),
        (
            CLAUSES,
            "clause",
            "Summarize this contract clause in one plain-English sentence.",
            "wording like '",
        ),
    ],
)
def test_each_kind_of_data_gets_its_own_instruction(pairs, kind, instruction, evidence):
    proposal = propose_instruction(texts(pairs), summaries(pairs))
    assert (proposal.kind, proposal.instruction) == (kind, instruction)
    assert "6 of 6 rows have " + evidence in proposal.why


def test_generic_instruction_when_no_kind_holds_most_rows():
    proposal = propose_instruction(texts(OTHER), summaries(OTHER))
    assert (
        proposal.kind == GENERIC and proposal.instruction == DEFAULT_INSTRUCTION == ModelConfig().instruction
    )
    assert "none of 3 rows reads as dialogue, news, a clause or a description" in proposal.why
    mixed = DIALOGUES[:2] + CLAUSES[:2] + OTHER  # 2 of 7 is not most
    proposal = propose_instruction(texts(mixed), summaries(mixed))
    assert proposal.kind == GENERIC and "(dialogue 2, contract or terms clauses 2 of 7)" in proposal.why
    assert propose_instruction(texts(OTHER), summaries(NEWS)).instruction == INSTRUCTIONS[GENERIC][FEW]
    assert propose_instruction([None, "  "]).why.startswith("no texts to read")


def test_the_legal_instruction_is_the_shipped_configs():
    """The shipped steep.yaml names its clauses explicitly; the model's own default names no kind of text."""
    shipped = load_config(REPO / "steep.yaml", environ={}).model.instruction
    assert shipped == INSTRUCTIONS["clause"][ONE] != DEFAULT_INSTRUCTION
    assert "clause" not in DEFAULT_INSTRUCTION and "text" in DEFAULT_INSTRUCTION
