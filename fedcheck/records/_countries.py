"""Built-in country code data: ISO 3166-1 alpha-3 (current codes) and ICAO Doc 9303 Part 3 special codes.

Kept as data in one private module so validation never depends on a network or an optional package, and so the
UN importer can map the English country names and demonyms the lists use to codes. Names follow the ISO 3166 /
UN short names; extra ``|``-separated spellings are forms seen in sanctions lists (demonyms, older names).
"""

from __future__ import annotations

__all__ = ["COUNTRY_NAMES", "ICAO_SPECIAL_CODES", "ISO_ALPHA3", "NAME_TO_CODE"]

# code|official short name|other spellings ...  (249 current ISO 3166-1 alpha-3 codes)
_ISO_TABLE = """
ABW|Aruba|Aruban
AFG|Afghanistan|Afghan|Afghani
AGO|Angola|Angolan
AIA|Anguilla
ALA|Aland Islands
ALB|Albania|Albanian
AND|Andorra
ARE|United Arab Emirates|UAE|Emirati
ARG|Argentina|Argentinian|Argentine
ARM|Armenia|Armenian
ASM|American Samoa
ATA|Antarctica
ATF|French Southern Territories
ATG|Antigua and Barbuda
AUS|Australia|Australian
AUT|Austria|Austrian
AZE|Azerbaijan|Azerbaijani
BDI|Burundi|Burundian
BEL|Belgium|Belgian
BEN|Benin|Beninese
BES|Bonaire, Sint Eustatius and Saba
BFA|Burkina Faso|Burkinabe
BGD|Bangladesh|Bangladeshi
BGR|Bulgaria|Bulgarian
BHR|Bahrain|Bahraini
BHS|Bahamas
BIH|Bosnia and Herzegovina|Bosnian
BLM|Saint Barthelemy
BLR|Belarus|Belarusian
BLZ|Belize
BMU|Bermuda
BOL|Bolivia (Plurinational State of)|Bolivia|Bolivian
BRA|Brazil|Brazilian
BRB|Barbados
BRN|Brunei Darussalam|Brunei
BTN|Bhutan
BVT|Bouvet Island
BWA|Botswana
CAF|Central African Republic|CAR
CAN|Canada|Canadian
CCK|Cocos (Keeling) Islands
CHE|Switzerland|Swiss
CHL|Chile|Chilean
CHN|China|Chinese
CIV|Cote d'Ivoire|Ivory Coast|Ivorian
CMR|Cameroon|Cameroonian
COD|Democratic Republic of the Congo|DRC|Congo, Democratic Republic of the|Congolese (DRC)
COG|Congo|Republic of the Congo
COK|Cook Islands
COL|Colombia|Colombian
COM|Comoros|Comorian
CPV|Cabo Verde|Cape Verde
CRI|Costa Rica
CUB|Cuba|Cuban
CUW|Curacao
CXR|Christmas Island
CYM|Cayman Islands
CYP|Cyprus|Cypriot
CZE|Czechia|Czech Republic|Czech
DEU|Germany|German|Federal Republic of Germany
DJI|Djibouti|Djiboutian
DMA|Dominica
DNK|Denmark|Danish
DOM|Dominican Republic
DZA|Algeria|Algerian
ECU|Ecuador
EGY|Egypt|Egyptian
ERI|Eritrea|Eritrean
ESH|Western Sahara
ESP|Spain|Spanish
EST|Estonia|Estonian
ETH|Ethiopia|Ethiopian
FIN|Finland|Finnish
FJI|Fiji
FLK|Falkland Islands (Malvinas)|Falkland Islands
FRA|France|French
FRO|Faroe Islands
FSM|Micronesia (Federated States of)|Micronesia
GAB|Gabon|Gabonese
GBR|United Kingdom of Great Britain and Northern Ireland|United Kingdom|UK|British|Great Britain
GEO|Georgia|Georgian
GGY|Guernsey
GHA|Ghana|Ghanaian
GIB|Gibraltar
GIN|Guinea|Guinean
GLP|Guadeloupe
GMB|Gambia|Gambian
GNB|Guinea-Bissau|Bissau-Guinean
GNQ|Equatorial Guinea
GRC|Greece|Greek
GRD|Grenada
GRL|Greenland
GTM|Guatemala
GUF|French Guiana
GUM|Guam
GUY|Guyana
HKG|Hong Kong|China, Hong Kong Special Administrative Region
HMD|Heard Island and McDonald Islands
HND|Honduras
HRV|Croatia|Croatian
HTI|Haiti
HUN|Hungary|Hungarian
IDN|Indonesia|Indonesian
IMN|Isle of Man
IND|India|Indian
IOT|British Indian Ocean Territory
IRL|Ireland|Irish
IRN|Iran (Islamic Republic of)|Iran|Iranian|Islamic Republic of Iran
IRQ|Iraq|Iraqi
ISL|Iceland
ISR|Israel|Israeli
ITA|Italy|Italian
JAM|Jamaica|Jamaican
JEY|Jersey
JOR|Jordan|Jordanian
JPN|Japan|Japanese
KAZ|Kazakhstan|Kazakh
KEN|Kenya|Kenyan
KGZ|Kyrgyzstan|Kyrgyz
KHM|Cambodia|Cambodian
KIR|Kiribati
KNA|Saint Kitts and Nevis
KOR|Republic of Korea|Korea, Republic of|South Korea
KWT|Kuwait|Kuwaiti
LAO|Lao People's Democratic Republic|Laos
LBN|Lebanon|Lebanese
LBR|Liberia|Liberian
LBY|Libya|Libyan|Libyan Arab Jamahiriya
LCA|Saint Lucia
LIE|Liechtenstein
LKA|Sri Lanka|Sri Lankan
LSO|Lesotho
LTU|Lithuania|Lithuanian
LUX|Luxembourg
LVA|Latvia|Latvian
MAC|Macao|China, Macao Special Administrative Region
MAF|Saint Martin (French part)
MAR|Morocco|Moroccan
MCO|Monaco
MDA|Republic of Moldova|Moldova
MDG|Madagascar
MDV|Maldives|Maldivian
MEX|Mexico|Mexican
MHL|Marshall Islands
MKD|North Macedonia|The former Yugoslav Republic of Macedonia|Macedonia
MLI|Mali|Malian
MLT|Malta|Maltese
MMR|Myanmar|Burma
MNE|Montenegro
MNG|Mongolia|Mongolian
MNP|Northern Mariana Islands
MOZ|Mozambique
MRT|Mauritania|Mauritanian
MSR|Montserrat
MTQ|Martinique
MUS|Mauritius
MWI|Malawi
MYS|Malaysia|Malaysian
MYT|Mayotte
NAM|Namibia
NCL|New Caledonia
NER|Niger|Nigerien
NFK|Norfolk Island
NGA|Nigeria|Nigerian
NIC|Nicaragua
NIU|Niue
NLD|Netherlands|Dutch|Netherlands (Kingdom of the)
NOR|Norway|Norwegian
NPL|Nepal|Nepalese
NRU|Nauru
NZL|New Zealand
OMN|Oman|Omani
PAK|Pakistan|Pakistani
PAN|Panama
PCN|Pitcairn
PER|Peru|Peruvian
PHL|Philippines|Filipino|Philippine
PLW|Palau
PNG|Papua New Guinea
POL|Poland|Polish
PRI|Puerto Rico
PRK|Democratic People's Republic of Korea|DPRK|North Korea|North Korean|RPDC
PRT|Portugal|Portuguese
PRY|Paraguay
PSE|State of Palestine|Palestine|Palestinian|Occupied Palestinian Territory
PYF|French Polynesia
QAT|Qatar|Qatari
REU|Reunion
ROU|Romania|Romanian
RUS|Russian Federation|Russia|Russian
RWA|Rwanda|Rwandan
SAU|Saudi Arabia|Saudi|Saudi Arabian
SDN|Sudan|Sudanese
SEN|Senegal|Senegalese
SGP|Singapore|Singaporean
SGS|South Georgia and the South Sandwich Islands
SHN|Saint Helena, Ascension and Tristan da Cunha|Saint Helena
SJM|Svalbard and Jan Mayen
SLB|Solomon Islands
SLE|Sierra Leone|Sierra Leonean
SLV|El Salvador
SMR|San Marino
SOM|Somalia|Somali
SPM|Saint Pierre and Miquelon
SRB|Serbia|Serbian
SSD|South Sudan|South Sudanese
STP|Sao Tome and Principe
SUR|Suriname
SVK|Slovakia|Slovak
SVN|Slovenia|Slovenian
SWE|Sweden|Swedish
SWZ|Eswatini|Swaziland
SXM|Sint Maarten (Dutch part)
SYC|Seychelles
SYR|Syrian Arab Republic|Syria|Syrian
TCA|Turks and Caicos Islands
TCD|Chad|Chadian
TGO|Togo|Togolese
THA|Thailand|Thai
TJK|Tajikistan|Tajik
TKL|Tokelau
TKM|Turkmenistan|Turkmen
TLS|Timor-Leste|East Timor
TON|Tonga
TTO|Trinidad and Tobago|Trinidadian
TUN|Tunisia|Tunisian
TUR|Turkiye|Turkey|Turkish
TUV|Tuvalu
TWN|Taiwan|Taiwan, Province of China
TZA|United Republic of Tanzania|Tanzania|Tanzanian
UGA|Uganda|Ugandan
UKR|Ukraine|Ukrainian
UMI|United States Minor Outlying Islands
URY|Uruguay
USA|United States of America|United States|USA|American|US
UZB|Uzbekistan|Uzbek
VAT|Holy See
VCT|Saint Vincent and the Grenadines
VEN|Venezuela (Bolivarian Republic of)|Venezuela|Venezuelan
VGB|British Virgin Islands|Virgin Islands (British)
VIR|United States Virgin Islands|Virgin Islands (U.S.)
VNM|Viet Nam|Vietnam|Vietnamese
VUT|Vanuatu
WLF|Wallis and Futuna
WSM|Samoa
YEM|Yemen|Yemeni
ZAF|South Africa|South African
ZMB|Zambia|Zambian
ZWE|Zimbabwe|Zimbabwean
"""

# ICAO Doc 9303 Part 3 codes that are not ISO 3166-1 alpha-3 country codes. "D" (Germany) is accepted by
# validate_country but canonicalised to "DEU" there, so it is not listed here.
_ICAO_TABLE = """
GBD|British Overseas Territories Citizen
GBN|British National (Overseas)
GBO|British Overseas Citizen
GBP|British Protected Person
GBS|British Subject
UNO|United Nations Organization official
UNA|United Nations specialized agency official
UNK|Resident of Kosovo (UNMIK travel document)
EUE|European Union
XBA|African Development Bank
XIM|African Export-Import Bank
XCC|Caribbean Community
XCE|Council of Europe
XCO|Common Market for Eastern and Southern Africa
XEC|Economic Community of West African States
XPO|International Criminal Police Organization (INTERPOL)
XES|Organisation of Eastern Caribbean States
XMP|Parliamentary Assembly of the Mediterranean
XOM|Sovereign Military Order of Malta
XDC|Southern African Development Community
XXA|Stateless person (1954 Convention)
XXB|Refugee (1951 Convention)
XXC|Refugee (other than the 1951 Convention)
XXX|Unspecified nationality
"""


def _parse(table: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for line in table.strip().splitlines():
        code, *names = line.split("|")
        out[code] = tuple(names)
    return out


COUNTRY_NAMES: dict[str, tuple[str, ...]] = _parse(_ISO_TABLE)
ISO_ALPHA3: frozenset[str] = frozenset(COUNTRY_NAMES)
ICAO_SPECIAL_CODES: dict[str, str] = {code: names[0] for code, names in _parse(_ICAO_TABLE).items()}


def _name_key(name: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in name.casefold()).split())


NAME_TO_CODE: dict[str, str] = {
    _name_key(name): code for code, names in COUNTRY_NAMES.items() for name in names
}
