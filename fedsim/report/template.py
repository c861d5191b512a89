"""The report's HTML template (jinja2, autoescaped by fedsim.report.writer).

Kept as a Python module rather than a .j2 file so that it travels wherever fedsim's code does:
a Flower app bundle (`flwr run`) carries .py, .toml, .md, .yaml and .json files only.
"""

REPORT_HTML = r'''{#- fedsim's report.html: the page, a run's summary, figures and tables (autoescaped; see fedsim/report/writer.py). -#}
{% macro cell(tag, value, source, row, column) -%}
<{{ tag }} data-source="{{ source }}" data-row="{{ row }}" data-column="{{ column }}">{{ value | display }}</{{ tag }}>
{%- endmacro %}
{% macro words(text) -%}
<span class="words">{{ text }}</span>
{%- endmacro %}
{% macro tpr(row, source, index, column) -%}
{%- if row.get(column) is missing %}{{ words(tpr_text(row, column)) }}{% else %}{{ cell("span", row[column], source, index, column) }}{% endif -%}
{%- endmacro %}
{% macro summary_section(summary, section_id, leakage_csv, training_csv) -%}
<section id="{{ section_id }}" class="summary"><h2>Summary</h2><p class="words">Threat model: {{ summary.threat_model }}.</p>
{%- set worst = summary.headline -%}
{%- if worst is none and summary.leakage.empty -%}
<p>No leakage was measured in this run.</p>
{%- elif worst is none -%}
<p>{{ words("The headline attack, " ~ summary.headline_name ~ ", has no row in leakage.csv.") }}</p>
{%- else -%}
{%- set w = worst.name | int -%}
<p class="headline">Leakage of the headline attack (fixed before the run: the config's headline, else the first attack listed) at its last observed round: <strong>AUC {{ cell("span", worst["auc"], leakage_csv, w, "auc") }}</strong>
{%- if "auc_ci_low" in worst.index %} ({{ words("95% interval") }} {{ cell("span", worst["auc_ci_low"], leakage_csv, w, "auc_ci_low") }} to {{ cell("span", worst["auc_ci_high"], leakage_csv, w, "auc_ci_high") }}){% endif %} at round {{ cell("span", worst["round"], leakage_csv, w, "round") }}, by the {{ cell("span", worst["attacker"], leakage_csv, w, "attacker") }}'s {{ cell("span", worst["attack"], leakage_csv, w, "attack") }} attack on {{ cell("span", worst["target"], leakage_csv, w, "target") }}; balanced accuracy {{ cell("span", worst["accuracy"], leakage_csv, w, "accuracy") }}, TPR {{ tpr(worst, leakage_csv, w, "tpr_at_fpr_1e-2") }} at {{ words("FPR 1e-2") }} and {{ tpr(worst, leakage_csv, w, "tpr_at_fpr_1e-3") }} at {{ words("FPR 1e-3") }} over {{ cell("span", worst["n_members"], leakage_csv, w, "n_members") }} members and {{ cell("span", worst["n_nonmembers"], leakage_csv, w, "n_nonmembers") }} non-members{% if "tpr_at_fpr_1e-2_ci_low" in worst.index and worst["tpr_at_fpr_1e-2_ci_low"] is not missing %} (TPR at {{ words("FPR 1e-2: 95% bootstrap interval") }} {{ cell("span", worst["tpr_at_fpr_1e-2_ci_low"], leakage_csv, w, "tpr_at_fpr_1e-2_ci_low") }} to {{ cell("span", worst["tpr_at_fpr_1e-2_ci_high"], leakage_csv, w, "tpr_at_fpr_1e-2_ci_high") }}){% endif %}.</p>
{%- if "canary_epsilon_lower_bound" in worst.index -%}
{%- if worst["canary_epsilon_lower_bound"] is missing %}
<p>{{ words("Privacy audit: no canaries (audit.canaries: 0), so no lower bound on epsilon was measured; the empirical epsilon of the targets (leakage.csv) is not a DP lower bound, since the targets of one run are not independent trials.") }}</p>
{%- else %}
<p>Privacy audit of the headline attack at that round: its canaries prove <strong>epsilon &ge; {{ cell("span", worst["canary_epsilon_lower_bound"], leakage_csv, w, "canary_epsilon_lower_bound") }}</strong> {{ words("at 95% confidence (one-run audit, Steinke, Nasr and Jagielski 2023)") }}
{%- set accountant = summary.accountant -%}
{%- if accountant is not none %}; the accountant (DP-SGD) guarantees <strong>epsilon &le; {{ cell("span", accountant["epsilon_max"], training_csv, accountant.name | int, "epsilon_max") }}</strong>{% else %}{{ words("; the accountant's epsilon, where the run has one, stands beside it in the privacy-audit figure") }}{% endif %}.</p>
{%- endif -%}
{%- endif -%}
{%- set selected = summary.selected -%}
{%- if selected is not none -%}
{%- set s = selected.name | int -%}
<p>Selected maximum over rounds and attacks: AUC {{ cell("span", selected["auc_holdout"], leakage_csv, s, "auc_holdout") }} on the held-out half of the targets, by the {{ cell("span", selected["attack"], leakage_csv, s, "attack") }} attack at round {{ cell("span", selected["round"], leakage_csv, s, "round") }} {{ words("(selected by its AUC on the other half,") }} {{ cell("span", selected["auc_select"], leakage_csv, s, "auc_select") }}{{ words(")") }}.</p>
{%- endif -%}
{%- endif -%}
{%- set final = summary.final_training -%}
{%- if final is not none -%}
{%- set f = final.name | int -%}
<p>Utility: test accuracy {{ cell("span", final["test_accuracy"], training_csv, f, "test_accuracy") }} after round {{ cell("span", final["round"], training_csv, f, "round") }}.</p>
{%- endif -%}
{%- if worst is not none -%}
{%- set columns = summary.headline_columns() -%}
<h3>Each attack at its last observed round</h3><table class="numbers"><tr>
{%- for label in columns.values() %}<th>{{ label }}</th>{% endfor -%}
</tr>
{%- for index, row in summary.per_attack.iterrows() -%}
<tr>
{%- for column in columns -%}
{%- if column.startswith("tpr_") and row[column] is missing %}<td class="words">{{ tpr_text(row, column) }}</td>
{%- else %}{{ cell("td", row[column], leakage_csv, index | int, column) }}{% endif -%}
{%- endfor -%}
</tr>
{%- endfor -%}
</table>
{%- endif -%}
</section>
{%- endmacro %}
{% macro figure(plot) -%}
{%- if plot.png is none -%}
<section id="{{ plot.name }}"><h2>{{ plot.title }}</h2><p class="note">{{ plot.caption }}</p></section>
{%- else -%}
<section id="{{ plot.name }}"><h2>{{ plot.title }}</h2><figure><img src="data:image/png;base64,{{ plot.png | b64 }}" alt="{{ plot.title }}"><figcaption>{{ plot.caption }}</figcaption></figure></section>
{%- endif -%}
{%- endmacro %}
{% macro table(rows) -%}
<table class="numbers"><tr>{% for column in rows.columns %}<th>{{ column }}</th>{% endfor %}</tr>
{%- for row in rows.astype("object").itertuples(index=False) -%}
<tr>{% for value in row %}<td>{{ value | display_or_blank }}</td>{% endfor %}</tr>
{%- endfor -%}
</table>
{%- endmacro %}
{% macro details(title, rows) -%}
<details><summary>{{ title }}</summary>{{ table(rows) }}</details>
{%- endmacro %}
{% macro page(title, meta, style) -%}
<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title><style>{{ style }}</style></head><body><h1>{{ title }}</h1><p class="meta">{{ meta }}</p>{{ caller() }}</body></html>
{% endmacro %}
{% macro run_column(name, link, summary, figures) -%}
<div><h3><a href="{{ link }}">{{ name }}</a></h3>{{ summary }}{% for plot in figures %}{{ figure(plot) }}{% endfor %}</div>
{%- endmacro %}
{% macro sweep_body(table_html, left_out, paired_html, points_html, figures, columns) -%}
<h2>Comparison</h2>{{ table_html }}
{%- if left_out %}<p>Not complete, left out: {{ left_out | join(", ") }}</p>{% endif -%}
{%- if paired_html is not none %}<h2>Paired differences (setting minus baseline, same seed)</h2><p>Mean over seeds of the per-seed difference, with its 95% paired t interval.</p>{{ paired_html }}{% endif -%}
<h2>Last-round AUC per run and attack</h2>{{ points_html }}
{%- for plot in figures %}{{ figure(plot) }}{% endfor -%}
<h2>Runs side by side</h2><div class="side-by-side">{% for column in columns %}{{ column }}{% endfor %}</div>
{%- endmacro %}
'''
