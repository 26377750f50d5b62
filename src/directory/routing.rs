//! Guided routing: the `[routing]` questionnaire evaluated against a caller's answers.
//!
//! A rule matches when every condition of its `when` holds (the question was answered
//! with one of the listed options). A service's raw score is the sum of the weights of
//! its matching rules; recommendations are ordered by it (then by the first matching
//! rule's place in the config), reported as min(raw, 1), with the reasons of every
//! matching rule joined, strongest first. A question is still worth asking when it is
//! unanswered and some rule that can still match (no condition contradicted by an answer)
//! depends on it; when none is left, the advice is complete.

use std::collections::HashMap;

use super::config::RoutingConfig;
use crate::pb::v1::{Recommendation, RoutingOption, RoutingQuestion};

#[derive(Debug, Clone)]
struct Rule {
    /// (question id, accepted option ids).
    when: Vec<(String, Vec<String>)>,
    agency_id: String,
    service_code: String,
    weight: f64,
    reason_en: String,
    reason_ar: String,
}

/// How a rule stands against a set of answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleState {
    /// Every condition is answered and holds.
    Matched,
    /// No answer contradicts it, some condition is unanswered.
    Open,
    /// An answer contradicts a condition.
    Ruled,
}

impl Rule {
    fn state(&self, answers: &HashMap<String, String>) -> RuleState {
        let mut open = false;
        for (question, options) in &self.when {
            match answers.get(question) {
                Some(answer) if options.contains(answer) => {}
                Some(_) => return RuleState::Ruled,
                None => open = true,
            }
        }
        if open {
            RuleState::Open
        } else {
            RuleState::Matched
        }
    }
}

/// The configured questions and rules.
#[derive(Debug, Clone, Default)]
pub struct Questionnaire {
    questions: Vec<RoutingQuestion>,
    rules: Vec<Rule>,
}

/// What the answers so far lead to.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    /// Best first.
    pub recommendations: Vec<Recommendation>,
    /// In the config's order; ask the first one next.
    pub next_questions: Vec<RoutingQuestion>,
    /// No question is left whose answer could change the recommendations.
    pub complete: bool,
}

impl Questionnaire {
    /// `agency_of` names the agency offering a service code; rules whose service has none
    /// are left out (config validation refuses them).
    pub fn from_config(
        routing: &RoutingConfig,
        agency_of: impl Fn(&str) -> Option<String>,
    ) -> Questionnaire {
        let questions = routing
            .questions
            .iter()
            .map(|q| RoutingQuestion {
                id: q.id.clone(),
                text_en: q.text_en.clone(),
                text_ar: q.text_ar.clone(),
                options: q
                    .options
                    .iter()
                    .map(|o| RoutingOption {
                        id: o.id.clone(),
                        label_en: o.label_en.clone(),
                        label_ar: o.label_ar.clone(),
                    })
                    .collect(),
            })
            .collect();
        let rules = routing
            .rules
            .iter()
            .filter_map(|r| {
                Some(Rule {
                    when: r
                        .when
                        .iter()
                        .map(|(q, o)| (q.clone(), o.0.clone()))
                        .collect(),
                    agency_id: agency_of(&r.service)?,
                    service_code: r.service.clone(),
                    weight: r.weight,
                    reason_en: r.reason_en.trim().to_string(),
                    reason_ar: r.reason_ar.trim().to_string(),
                })
            })
            .collect();
        Questionnaire { questions, rules }
    }

    pub fn questions(&self) -> &[RoutingQuestion] {
        &self.questions
    }

    pub fn question(&self, id: &str) -> Option<&RoutingQuestion> {
        self.questions.iter().find(|q| q.id == id)
    }

    /// The advice for `answers` (question id → option id), which the caller has checked
    /// against [`Questionnaire::question`].
    pub fn advise(&self, answers: &HashMap<String, String>) -> Advice {
        let states: Vec<RuleState> = self.rules.iter().map(|r| r.state(answers)).collect();

        // Matching rules, grouped by service in order of each service's first rule.
        let mut by_service: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if states[i] != RuleState::Matched {
                continue;
            }
            match by_service
                .iter_mut()
                .find(|(code, _)| *code == rule.service_code)
            {
                Some((_, rules)) => rules.push(i),
                None => by_service.push((&rule.service_code, vec![i])),
            }
        }
        let mut ranked: Vec<(f64, Recommendation)> = by_service
            .into_iter()
            .map(|(_, mut rules)| {
                let raw: f64 = rules.iter().map(|i| self.rules[*i].weight).sum();
                // Strongest reason first; equal weights keep the config's order.
                rules.sort_by(|a, b| self.rules[*b].weight.total_cmp(&self.rules[*a].weight));
                let first = &self.rules[rules[0]];
                let join = |f: fn(&Rule) -> &str| {
                    rules
                        .iter()
                        .map(|i| f(&self.rules[*i]))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let recommendation = Recommendation {
                    agency_id: first.agency_id.clone(),
                    service_code: first.service_code.clone(),
                    score: (raw.min(1.0) * 10_000.0).round() / 10_000.0,
                    reason_en: join(|r| &r.reason_en),
                    reason_ar: join(|r| &r.reason_ar),
                };
                ((raw * 1e9).round() / 1e9, recommendation)
            })
            .collect();
        // A stable sort: equal scores keep the order of their first matching rule.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));

        let next_questions: Vec<RoutingQuestion> =
            self.questions
                .iter()
                .filter(|q| !answers.contains_key(&q.id))
                .filter(|q| {
                    self.rules.iter().zip(&states).any(|(r, s)| {
                        *s == RuleState::Open && r.when.iter().any(|(id, _)| *id == q.id)
                    })
                })
                .cloned()
                .collect();
        Advice {
            recommendations: ranked.into_iter().map(|(_, r)| r).collect(),
            complete: next_questions.is_empty(),
            next_questions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTING: &str = r#"
[[questions]]
id = "need"
text_en = "What is the main need?"
text_ar = "ما هي الحاجة الرئيسية؟"
options = [
  { id = "violence", label_en = "Domestic violence", label_ar = "عنف أسري" },
  { id = "housing", label_en = "Housing", label_ar = "سكن" },
  { id = "money", label_en = "Money", label_ar = "مال" },
]

[[questions]]
id = "danger"
text_en = "Is anyone in immediate danger?"
text_ar = "هل يوجد شخص في خطر مباشر؟"
options = [
  { id = "yes", label_en = "Yes", label_ar = "نعم" },
  { id = "no", label_en = "No", label_ar = "لا" },
]

[[rules]]
when = { need = "violence" }
service = "shelter"
weight = 0.8
reason_en = "Shelter for victims."
reason_ar = "إيواء الضحايا."

[[rules]]
when = { need = "violence" }
service = "police-help"
weight = 0.3
reason_en = "The police protect."
reason_ar = "الشرطة تحمي."

[[rules]]
when = { need = "violence", danger = "yes" }
service = "police-help"
weight = 0.7
reason_en = "Someone is in danger."
reason_ar = "شخص في خطر."

[[rules]]
when = { need = "housing" }
service = "housing-support"
weight = 0.9
reason_en = "Housing support."
reason_ar = "دعم السكن."

[[rules]]
when = { need = ["money", "housing"] }
service = "grants"
weight = 0.5
reason_en = "Grants."
reason_ar = "منح."
"#;

    fn questionnaire() -> Questionnaire {
        let routing: RoutingConfig = toml::from_str(ROUTING).unwrap();
        Questionnaire::from_config(&routing, |code| {
            Some(
                match code {
                    "police-help" => "police",
                    "housing-support" => "housing",
                    _ => "social-services",
                }
                .to_string(),
            )
        })
    }

    fn answers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(q, o)| (q.to_string(), o.to_string()))
            .collect()
    }

    fn ids(questions: &[RoutingQuestion]) -> Vec<&str> {
        questions.iter().map(|q| q.id.as_str()).collect()
    }

    #[test]
    fn no_answers_ask_the_questions_in_order_and_recommend_nothing() {
        let advice = questionnaire().advise(&HashMap::new());
        assert!(advice.recommendations.is_empty());
        assert_eq!(ids(&advice.next_questions), ["need", "danger"]);
        assert_eq!(advice.next_questions[0].options.len(), 3);
        assert!(!advice.complete);
    }

    #[test]
    fn weights_add_up_per_service_and_reasons_are_joined_strongest_first() {
        let advice = questionnaire().advise(&answers(&[("need", "violence"), ("danger", "yes")]));
        let recs = &advice.recommendations;
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].agency_id, "police");
        assert_eq!(recs[0].service_code, "police-help");
        assert_eq!(recs[0].score, 1.0);
        assert_eq!(
            recs[0].reason_en,
            "Someone is in danger. The police protect."
        );
        assert_eq!(recs[0].reason_ar, "شخص في خطر. الشرطة تحمي.");
        assert_eq!(recs[1].service_code, "shelter");
        assert_eq!(recs[1].score, 0.8);
        assert!(advice.complete);
        assert!(advice.next_questions.is_empty());
    }

    #[test]
    fn a_partial_answer_recommends_what_matches_and_asks_what_could_change_it() {
        let q = questionnaire();
        let advice = q.advise(&answers(&[("need", "violence")]));
        let codes: Vec<_> = advice
            .recommendations
            .iter()
            .map(|r| (r.service_code.as_str(), r.score))
            .collect();
        assert_eq!(codes, [("shelter", 0.8), ("police-help", 0.3)]);
        assert_eq!(ids(&advice.next_questions), ["danger"]);
        assert!(!advice.complete);

        // The danger question does not matter for housing: the advice is complete.
        let advice = q.advise(&answers(&[("need", "housing")]));
        let codes: Vec<_> = advice
            .recommendations
            .iter()
            .map(|r| r.service_code.as_str())
            .collect();
        assert_eq!(
            codes,
            ["housing-support", "grants"],
            "any-of conditions match"
        );
        assert!(advice.complete);

        // Answering "no" rules out the danger rule but keeps the others.
        let advice = q.advise(&answers(&[("need", "violence"), ("danger", "no")]));
        assert_eq!(advice.recommendations[1].score, 0.3);
        assert!(advice.complete);

        // An answer to a later question alone: the first question is still worth asking.
        let advice = q.advise(&answers(&[("danger", "yes")]));
        assert!(advice.recommendations.is_empty());
        assert_eq!(ids(&advice.next_questions), ["need"]);
    }

    #[test]
    fn equal_scores_keep_the_config_order() {
        let mut routing: RoutingConfig = toml::from_str(ROUTING).unwrap();
        for r in &mut routing.rules {
            r.weight = 0.5;
        }
        let q = Questionnaire::from_config(&routing, |_| Some("x".into()));
        let advice = q.advise(&answers(&[("need", "violence"), ("danger", "no")]));
        let codes: Vec<_> = advice
            .recommendations
            .iter()
            .map(|r| r.service_code.as_str())
            .collect();
        assert_eq!(codes, ["shelter", "police-help"]);
    }
}
