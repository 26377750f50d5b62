//! Free-text search over the service catalogue, in English and Arabic.
//!
//! Text is normalized the same way on both sides (see [`normalize`]), cut into words and
//! lightly stemmed (see [`terms`]); a service's score is, for every query word, the best
//! field it matches (name > category > description > agency name), plus a bonus when the
//! whole query appears as a phrase in the service's name. docs/directory.md has the rules.

/// Which language a text or a field is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    Arabic,
}

/// Where in a service a word was found; the weight says how much a match there counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// The service's name.
    Name,
    /// The labels of the service's categories ("domestic violence", "العنف الأسري").
    Category,
    /// The service's description.
    Description,
    /// The name of the agency offering the service.
    Agency,
}

impl FieldKind {
    pub fn weight(self) -> f64 {
        match self {
            FieldKind::Name => 10.0,
            FieldKind::Category => 6.0,
            FieldKind::Description => 3.0,
            FieldKind::Agency => 2.0,
        }
    }
}

/// A query word matching only the start of a field's word ("hous" → "housing") counts
/// this fraction of a whole-word match.
pub const PREFIX_FACTOR: f64 = 0.5;
/// Query words shorter than this (in characters) only match whole words.
const MIN_PREFIX_CHARS: usize = 3;

/// Lowercases and folds text so that spelling variants compare equal:
/// - letters are lowercased;
/// - Arabic diacritics (tashkeel: fatha, damma, kasra, tanween, shadda, sukun, dagger
///   alef, Quranic marks) and tatweel (ـ) are removed;
/// - alef forms أ إ آ ٱ become ا, ة becomes ه, ى becomes ي (and the Persian ی and ک,
///   common on some keyboards, become ي and ك);
/// - Latin accents are removed (é → e, ç → c, ß → ss, æ → ae);
/// - Arabic-Indic digits become 0-9;
/// - anything that is not a letter or digit separates words (one space).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            // Tashkeel and other Arabic marks, tatweel.
            '\u{0610}'..='\u{061A}'
            | '\u{064B}'..='\u{065F}'
            | '\u{0670}'
            | '\u{06D6}'..='\u{06DC}'
            | '\u{06DF}'..='\u{06E8}'
            | '\u{06EA}'..='\u{06ED}'
            | '\u{0640}'
            // Combining accents (decomposed Latin), zero-width and direction marks.
            | '\u{0300}'..='\u{036F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'
            | '\u{FEFF}' => {}
            'أ' | 'إ' | 'آ' | 'ٱ' => out.push('ا'),
            'ة' => out.push('ه'),
            'ى' => out.push('ي'),
            'ی' => out.push('ي'),
            'ک' => out.push('ك'),
            '٠'..='٩' => out.push(char::from(b'0' + (c as u32 - 0x0660) as u8)),
            '۰'..='۹' => out.push(char::from(b'0' + (c as u32 - 0x06F0) as u8)),
            c if c.is_alphanumeric() => match fold_latin(c) {
                Some(s) => out.push_str(s),
                None => out.push(c),
            },
            _ => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The unaccented form of a lowercase accented Latin letter.
fn fold_latin(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        _ => return None,
    })
}

fn is_arabic(c: char) -> bool {
    matches!(c, '\u{0600}'..='\u{06FF}' | '\u{0750}'..='\u{077F}' | '\u{08A0}'..='\u{08FF}' | '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFC}')
}

/// The languages a query is written in: Arabic letters → Arabic, other letters →
/// English; both when it mixes them or has no letters.
pub fn detect(text: &str) -> Vec<Language> {
    let arabic = text.chars().any(is_arabic);
    let latin = text.chars().any(|c| c.is_alphabetic() && !is_arabic(c));
    match (arabic, latin) {
        (true, false) => vec![Language::Arabic],
        (false, true) => vec![Language::English],
        _ => vec![Language::English, Language::Arabic],
    }
}

/// Arabic article and the prepositions fused with it: "والإسكان", "للإسكان" → "اسكان".
const ARABIC_PREFIXES: &[&str] = &["وال", "بال", "كال", "فال", "لل", "ال"];

/// Light stemming, enough for catalogue words: the Arabic article is dropped; English
/// plurals and -ing/-ed endings and a final -e are dropped ("houses", "housing", "house"
/// → "hous").
pub fn stem(word: &str) -> String {
    if word.chars().any(is_arabic) {
        for prefix in ARABIC_PREFIXES {
            if let Some(rest) = word.strip_prefix(prefix) {
                if rest.chars().count() >= 2 {
                    return rest.to_string();
                }
            }
        }
        return word.to_string();
    }
    if !word.chars().all(|c| c.is_ascii_lowercase()) {
        return word.to_string();
    }
    let mut w = word.to_string();
    if w.len() > 4 && w.ends_with("ies") {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.len() > 3
        && w.ends_with('s')
        && !w.ends_with("ss")
        && !w.ends_with("us")
        && !w.ends_with("is")
    {
        w.pop();
    }
    if w.len() > 5 && w.ends_with("ing") {
        w.truncate(w.len() - 3);
    } else if w.len() > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        w.truncate(w.len() - 2);
    }
    if w.len() > 4 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// Words that say nothing about a service (normalized forms).
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "i", "in", "is", "it", "me",
    "my", "of", "on", "or", "our", "the", "their", "this", "to", "we", "with", "your", "في", "من",
    "على", "الى", "عن", "او", "مع", "ان", "التي", "الذي", "هذا", "هذه", "ذلك", "و",
];

/// The normalized, stemmed words of a text, in order.
pub fn terms(text: &str) -> Vec<String> {
    normalize(text)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(stem)
        .collect()
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Stemmed words without stop words (unless the query has nothing else).
    pub terms: Vec<String>,
    /// Which fields the query is compared with.
    pub languages: Vec<Language>,
}

impl Query {
    /// None when the text holds no letter or digit to search for.
    pub fn parse(text: &str, language: Option<Language>) -> Option<Query> {
        let words: Vec<String> = normalize(text)
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        if words.is_empty() {
            return None;
        }
        let content: Vec<&String> = words
            .iter()
            .filter(|w| !STOP_WORDS.contains(&w.as_str()))
            .collect();
        let chosen: Vec<&String> = if content.is_empty() {
            words.iter().collect()
        } else {
            content
        };
        let mut terms: Vec<String> = Vec::new();
        for w in chosen {
            let t = stem(w);
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        Some(Query {
            terms,
            languages: match language {
                Some(l) => vec![l],
                None => detect(&normalize(text)),
            },
        })
    }
}

/// One searchable text of a service.
#[derive(Debug, Clone)]
struct Field {
    kind: FieldKind,
    language: Language,
    terms: Vec<String>,
}

/// What search sees of one service.
#[derive(Debug, Clone, Default)]
pub struct Document {
    fields: Vec<Field>,
}

impl Document {
    pub fn field(mut self, kind: FieldKind, language: Language, text: &str) -> Document {
        self.fields.push(Field {
            kind,
            language,
            terms: terms(text),
        });
        self
    }

    /// How well the document matches; 0 when no query word matches.
    pub fn score(&self, query: &Query) -> f64 {
        let fields: Vec<&Field> = self
            .fields
            .iter()
            .filter(|f| query.languages.contains(&f.language))
            .collect();
        let mut total = 0.0;
        for term in &query.terms {
            let prefix_ok = term.chars().count() >= MIN_PREFIX_CHARS;
            let best = fields
                .iter()
                .map(|f| {
                    if f.terms.iter().any(|t| t == term) {
                        f.kind.weight()
                    } else if prefix_ok && f.terms.iter().any(|t| t.starts_with(term.as_str())) {
                        f.kind.weight() * PREFIX_FACTOR
                    } else {
                        0.0
                    }
                })
                .fold(0.0, f64::max);
            total += best;
        }
        if total > 0.0 && query.terms.len() >= 2 {
            let phrase = fields.iter().any(|f| {
                f.kind == FieldKind::Name
                    && f.terms
                        .windows(query.terms.len())
                        .any(|w| w == query.terms.as_slice())
            });
            if phrase {
                total += FieldKind::Name.weight();
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_folds_case_accents_and_arabic_variants() {
        assert_eq!(normalize("  Housing   SUPPORT! "), "housing support");
        assert_eq!(normalize("Café Crème, Œuvre"), "cafe creme oeuvre");
        assert_eq!(normalize("Straße"), "strasse");
        // Decomposed accents (e + U+0301) fold like precomposed ones.
        assert_eq!(normalize("Cafe\u{301}"), "cafe");
        // Diacritics (tashkeel) and tatweel.
        assert_eq!(normalize("الإِسْكَانُ"), "الاسكان");
        assert_eq!(normalize("إســكان"), "اسكان");
        assert_eq!(normalize("مُسَاعَدَةٌ"), "مساعده");
        // Alef forms, taa marbuta, alef maqsura.
        assert_eq!(normalize("أسرة"), "اسره");
        assert_eq!(normalize("إسكان"), normalize("اسكان"));
        assert_eq!(normalize("آمنة"), "امنه");
        assert_eq!(normalize("مستشفى"), "مستشفي");
        // Arabic punctuation separates words; Arabic-Indic digits become ASCII.
        assert_eq!(normalize("سكن،عمل؟ ٣٦٥"), "سكن عمل 365");
        assert_eq!(normalize("?!"), "");
    }

    #[test]
    fn stemming_is_light() {
        for (w, s) in [
            ("housing", "hous"),
            ("house", "hous"),
            ("houses", "hous"),
            ("families", "family"),
            ("services", "servic"),
            ("needed", "need"),
            ("need", "need"),
            ("status", "status"),
            ("crisis", "crisis"),
            ("business", "business"),
            ("الاسكان", "اسكان"),
            ("للاسكان", "اسكان"),
            ("والاسره", "اسره"),
            ("الم", "الم"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }

    #[test]
    fn queries_drop_stop_words_and_detect_the_language() {
        let q = Query::parse("Support for the houses", None).unwrap();
        assert_eq!(q.terms, ["support", "hous"]);
        assert_eq!(q.languages, [Language::English]);
        let q = Query::parse("دعم في الإسكان", None).unwrap();
        assert_eq!(q.terms, ["دعم", "اسكان"]);
        assert_eq!(q.languages, [Language::Arabic]);
        let q = Query::parse("the", Some(Language::Arabic)).unwrap();
        assert_eq!(q.terms, ["the"], "a query of stop words only keeps them");
        assert_eq!(q.languages, [Language::Arabic]);
        assert_eq!(Query::parse("؟ ... !", None), None);
        assert_eq!(Query::parse("\u{064E}\u{0640}", None), None);
        assert_eq!(
            Query::parse("2026", None).unwrap().languages,
            [Language::English, Language::Arabic]
        );
    }

    fn housing() -> Document {
        Document::default()
            .field(FieldKind::Name, Language::English, "Housing support")
            .field(FieldKind::Name, Language::Arabic, "دعم الإسكان")
            .field(FieldKind::Category, Language::English, "housing")
            .field(FieldKind::Category, Language::Arabic, "الإسكان")
            .field(
                FieldKind::Description,
                Language::English,
                "Grants and loans for citizens who need a home.",
            )
            .field(FieldKind::Agency, Language::English, "Housing Department")
    }

    fn counselling() -> Document {
        Document::default()
            .field(FieldKind::Name, Language::English, "Family counselling")
            .field(
                FieldKind::Description,
                Language::English,
                "Support for families in conflict, including housing advice.",
            )
            .field(
                FieldKind::Agency,
                Language::English,
                "Family Development Office",
            )
    }

    fn score(doc: &Document, q: &str) -> f64 {
        doc.score(&Query::parse(q, None).unwrap())
    }

    #[test]
    fn name_matches_rank_above_categories_descriptions_and_agencies() {
        // A name match outweighs a description match.
        assert_eq!(score(&housing(), "housing"), FieldKind::Name.weight());
        assert_eq!(
            score(&counselling(), "housing"),
            FieldKind::Description.weight()
        );
        assert!(score(&counselling(), "counselling") > score(&housing(), "counselling"));
        // A word only in the agency's name counts least.
        assert_eq!(score(&housing(), "department"), FieldKind::Agency.weight());
        // Prefixes count half; the whole query as a phrase in the name adds a bonus.
        assert_eq!(
            score(&housing(), "hou"),
            FieldKind::Name.weight() * PREFIX_FACTOR
        );
        assert_eq!(score(&housing(), "housing support"), 30.0);
        assert_eq!(score(&housing(), "support housing"), 20.0);
        assert_eq!(score(&housing(), "shelter"), 0.0);
    }

    #[test]
    fn arabic_queries_match_with_or_without_diacritics_and_alef_forms() {
        let d = housing();
        let plain = score(&d, "اسكان");
        assert_eq!(plain, FieldKind::Name.weight());
        for q in ["إسكان", "الإسكان", "الإِسْكَانُ", "الاسكـــان", "للإسكان"]
        {
            assert_eq!(score(&d, q), plain, "{q}");
        }
        // English fields are not compared with an Arabic query, and the other way round.
        assert_eq!(score(&counselling(), "إسكان"), 0.0);
        let english_only = Query::parse("housing", Some(Language::Arabic)).unwrap();
        assert_eq!(d.score(&english_only), 0.0);
    }
}
