"""Build the ``tools`` routing benchmark from the Berkeley Function-Calling Leaderboard.

BFCL (PyPI ``bfcl-eval``, Apache-2.0) ships thousands of user requests, each with the
function calls that answer it. A router in front of MCP servers never sees single
functions, it sees *servers*: so this module groups the functions into realistic tool
servers (the explicit :data:`SERVERS` table below), labels every request with the
server(s) its ground-truth calls belong to, and writes a RouteTable plus
train/dev/test splits:

- a request whose calls all belong to one server is an ``in_scope`` row of that server
  (or an ``out_of_scope`` row when that server is left out of the table);
- a request whose calls span two or more table servers is a ``multi_step`` row
  (no single server can answer it, the router has to escalate).

Everything is derived from the data directory and ``seed``: the same inputs give the
same output bytes. Only the standard library is used, so the builder runs before the
project's virtual environment exists.

Run: ``python -m routermesh_bench.tooldata --data DIR --out DIR`` (or the file itself).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import textwrap
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

SOURCE_PACKAGE = "bfcl-eval"
SOURCE_VERSION = "2026.3.23"
SOURCE_LICENSE = "Apache-2.0"
ESCALATE = "__escalate__"
"""Route label of rows no single table route may take (runtime.config.ESCALATE_ROUTE)."""

TABLE_SIZE = 40
EXAMPLES_PER_ROUTE = 10
POOL_MAX = 15
MAX_CHARS = 300
"""Longest request kept: a routed request is one short user message."""
EXAMPLE_MAX_CHARS = 256
"""Longest RouteTable example (the RouteTable CRD's cap)."""

MESH = "tools"
TARGET = "http://{name}-mcp.tools.svc:8000/mcp"

SINGLE_TURN_FILES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)
"""BFCL categories with one user request and its ground-truth calls. Java/JavaScript
categories are left out: their functions are methods of code bases, not tool servers."""

MULTI_TURN_FILES = (
    "multi_turn_base",
    "multi_turn_long_context",
    "multi_turn_miss_func",
    "multi_turn_miss_param",
)

CLASS_DOCS = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
"""Multi-turn API class -> its function-doc file in ``multi_turn_func_doc/``."""


@dataclass(frozen=True)
class Server:
    """One tool server (what one MCP server would expose).

    ``functions`` are exact BFCL function names or ``fnmatch`` patterns (``weather.*``);
    an exact name always wins over a pattern, and a name two servers claim is an error.
    ``classes`` are multi-turn API classes whose every function belongs here.
    """

    name: str
    description: str
    functions: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()


# The server table. Descriptions are written for the route table (what a person would
# say about the MCP server), not copied from the BFCL docs.
SERVERS: tuple[Server, ...] = (
    # --- Schema-Guided-Dialogue services (live categories) --------------------------------
    Server(
        "clock",
        "Phone clock: set, list and label alarms, start countdown timers, and tell the "
        "current time or the time difference in any city or time zone.",
        (
            "Alarm_1_*",
            "set_alarm",
            "set_countdown",
            "get_current_time",
            "getCurrentTime",
            "time_zones.*",
            "timezone.convert",
            "timezones.get_difference",
            "time_zone_converter",
            "get_time_difference",
        ),
    ),
    Server(
        "buses",
        "Intercity coaches: search bus itineraries between cities on a date and buy bus "
        "tickets for a number of passengers, with extra luggage.",
        ("Buses_3_*",),
    ),
    Server(
        "events",
        "Live events and concerts: find concerts, plays, festivals and other cultural "
        "events in a city on a date, get event details and buy tickets for them.",
        (
            "Events_3_*",
            "event_finder.find_upcoming",
            "events.find_event",
            "concert.*",
            "concert_finder",
            "concert_info.get",
            "concert_booking.book_ticket",
            "find_concert",
            "festival.book_ticket",
            "musical_ticket.buy",
        ),
    ),
    Server(
        "flights",
        "Air travel: search one-way and round-trip flights, check flight status and "
        "prices, book and cancel flights, airports, travel insurance, the traveller's "
        "stored credit cards, invoices and travel budget.",
        (
            "Flights_4_*",
            "book_flight",
            "flight.*",
            "flight_book",
            "flights.search",
            "find_flights",
            "flight_ticket_pricing.get",
        ),
        ("TravelAPI",),
    ),
    Server(
        "hotels",
        "Accommodation: search hotels and holiday houses by city, dates, rating and "
        "amenities, check room availability and prices, and book rooms or houses.",
        (
            "Hotels_2_*",
            "Hotels_4_*",
            "hotel.*",
            "hotel_booking",
            "hotel_booking.*",
            "hotel_booking_book",
            "hotel_bookings.book_room",
            "hotel_book",
            "book_hotel",
            "book_room",
            "hilton_hotel.check_availability",
            "hotel_room_pricing.get",
            "search_hotels",
        ),
    ),
    Server(
        "realestate",
        "Real estate: find homes and apartments to rent or buy by city, bedrooms and "
        "amenities, schedule viewings, and estimate or forecast property values.",
        (
            "Homes_2_*",
            "realestate.find_properties",
            "property_valuation.get",
            "property_records.get",
            "predict_house_price",
            "house_price_forecast",
            "house_price_trends",
            "ml.predict_house_price",
        ),
    ),
    Server(
        "films",
        "Film catalogue and online streaming: find movies by genre, director or cast, "
        "movie details and ratings, and stream a movie online with subtitles.",
        (
            "Movies_3_*",
            "Media_3_*",
            "imdb.find_movies_by_actor",
            "movie_details.brief",
            "streaming_services.shows_list_and_ratings",
        ),
    ),
    Server(
        "cinema",
        "Movie theaters: which movies are showing in a city or theater, showtimes for a "
        "film on a date, IMAX and 3D screenings, and buying cinema tickets.",
        (
            "Movies_1_*",
            "find_movie_showing",
            "get_theater_movie_releases",
            "get_movies",
        ),
    ),
    Server(
        "music",
        "Music player: look up songs by artist, album, genre or year, play a song, artist "
        "or album on a device or on Spotify, song lyrics, charts, and playback volume.",
        (
            "Music_3_*",
            "play_song",
            "play_spotify_song",
            "spotify.play",
            "play_artist",
            "get_song_lyrics",
            "musicCharts.getMostPlayed",
            "set_volume",
        ),
    ),
    Server(
        "payments",
        "Personal payments and bank accounts: send money to or request money from a "
        "contact, transfer between accounts, deposits, balances, statements and "
        "transaction history.",
        (
            "Payment_1_*",
            "bank.*",
            "bank_account.transfer",
            "banking_service",
            "BankStatementOverView",
        ),
    ),
    Server(
        "carrental",
        "Car rental: find cars available for rent at a location and dates, compare "
        "rental prices, and reserve a car with insurance.",
        ("RentalCars_3_*", "car.rental", "car_rental_pricing.get"),
    ),
    Server(
        "restaurants",
        "Restaurants: find restaurants by cuisine, location, price and dietary options, "
        "restaurant details and ratings, and reserve a table.",
        (
            "Restaurants_2_*",
            "restaurant.*",
            "restaurant_finder",
            "restaurant_search",
            "restaurant_search.*",
            "restaurant_info",
            "find_restaurant",
            "find_restaurants",
            "vegan_restaurant.find_nearby",
            "get_best_sushi_places",
            "get_restaurant",
        ),
    ),
    Server(
        "uber",
        "Rides and food delivery (Uber-style): book a cab or Uber ride to an address with a "
        "ride type and seats, order food from restaurants for delivery, and change the "
        "food or drink items of an order.",
        (
            "RideSharing_2_*",
            "uber.ride",
            "ride_hailing.get_rides",
            "uber.eat.order",
            "ChaFod",
            "ChaDri.change_drink",
        ),
    ),
    Server(
        "salons",
        "Hair salons: find hair stylists and unisex salons in a city and book an "
        "appointment with a stylist.",
        ("Services_1_*",),
    ),
    Server(
        "therapists",
        "Mental-health care: find therapists, psychologists, psychiatrists and family "
        "counselors in a city and book a session.",
        ("Services_4_*",),
    ),
    Server(
        "trains",
        "Rail travel: find trains between cities on a date and buy train tickets for a "
        "fare class and number of passengers.",
        ("Trains_1_*", "train_ticket.buy"),
    ),
    Server(
        "sightseeing",
        "Sightseeing: tourist attractions, museums, landmarks and parks to visit in a "
        "city (free entry, kid-friendly, category), national park facts, and trip "
        "itineraries.",
        (
            "Travel_1_*",
            "tourist_attraction.find",
            "sightseeing.popular_in_city",
            "travel_itinerary_generator",
            "park_information",
            "parks.find_nearby",
            "park_search.find",
            "nature_park.find_nearby",
            "nature_reserve.find_nearby",
        ),
    ),
    Server(
        "weather",
        "Weather: current conditions and forecasts for a city or coordinates, "
        "temperature, humidity, precipitation, UV index, snow reports and air quality.",
        (
            "Weather_1_*",
            "get_current_weather",
            "OpenWeatherMap.*",
            "weather.*",
            "weather_forecast",
            "weather_forecast.*",
            "weather_forecast_*",
            "detailed_weather_forecast",
            "api.weather",
            "api_name.get_weather_forecast",
            "current_weather_condition",
            "fetch_weather_data",
            "open_meteo_api.fetch_weather_data",
            "get_weather_by_coordinates",
            "get_temperature",
            "temperature",
            "average_temperature",
            "humidity_temperature_forecast",
            "get_current_and_future_temperature",
            "uv_index.get_future",
            "get_snow_report",
            "air_quality",
            "air_quality_forecast",
            "get_air_quality",
            "get_air_quality_index",
            "environmental_data.air_quality_index",
        ),
    ),
    # --- BFCL multi-turn API classes -------------------------------------------------------
    Server(
        "files",
        "File system: list, create, move, copy and delete files and directories, read, "
        "search (grep), sort, compare and count the contents of files.",
        ("list_directory_contents",),
        ("GorillaFileSystem",),
    ),
    Server(
        "messaging",
        "Workspace messaging: log in, look up users and contacts, send, view, search and "
        "delete messages, and message statistics.",
        (),
        ("MessageAPI",),
    ),
    Server(
        "twitter",
        "Twitter/X account: post tweets, retweet, comment and mention, follow users, and "
        "read tweets, comments and account statistics.",
        ("social_media_analytics.most_followed",),
        ("TwitterAPI",),
    ),
    Server(
        "helpdesk",
        "Internal support tickets: create, view, edit, resolve and close helpdesk tickets "
        "and list a user's tickets.",
        (),
        ("TicketAPI",),
    ),
    Server(
        "trading",
        "Stock trading and market data: stock quotes and history, company financials, "
        "watchlists, placing and cancelling orders, order history and the brokerage "
        "account's funds.",
        (
            "stock_price",
            "stock_price.get",
            "get_stock_price",
            "get_stock_prices",
            "get_stock_info",
            "get_stock_data",
            "stock_market_data",
            "market_performance.get_data",
            "avg_closing_price",
            "volume_traded",
            "holdings.get_13F_HR",
            "fmp.income_statement",
            "quarterly_earnings",
            "corporate_finance.dividend_data",
            "stock_forecast",
            "get_metal_price",
        ),
        ("TradingBot",),
    ),
    Server(
        "vehicle",
        "Connected car: start the engine, lock doors, brakes, cruise control, headlights, "
        "climate, fuel and tire pressure, navigation and range estimates.",
        (),
        ("VehicleControlAPI",),
    ),
    Server(
        "math",
        "Math tools: arithmetic, factorials, primes, GCD and LCM, roots of equations, "
        "derivatives and integrals, logarithms, sorting numbers and unit conversions.",
        (
            "math.factorial",
            "math.gcd",
            "math.hcf",
            "math.lcm",
            "math.power",
            "math.roots.*",
            "math.definite_integral",
            "math.gaussian_integral",
            "math_gcd",
            "math_toolkit.*",
            "number_theory.gcd",
            "number_analysis.prime_factors",
            "calculate_gcd",
            "calculate_lcm",
            "gcd",
            "lcm",
            "calculate_factorial",
            "get_prime_factors",
            "prime_factorize",
            "find_prime_numbers",
            "generate_prime",
            "get_fibonacci_sequence",
            "sum",
            "sum_elements",
            "sum_numbers",
            "calculate_sum",
            "add",
            "sub",
            "multiply",
            "CalcProduct",
            "algebra.quadratic_roots",
            "solve_quadratic",
            "solve_quadratic_equation",
            "solve.quadratic_equation",
            "math_roots.quadratic",
            "calculus.derivative",
            "calculate_derivative",
            "derivative",
            "estimate_derivative",
            "integral",
            "integrate",
            "calculate_integral",
            "mathematics.calculate_area_under_curve",
            "calculate_area_under_curve",
            "functions.intersect",
            "functions.zero",
            "array_sort",
            "sort_list",
            "sort_array",
            "unit_conversion",
            "unit_conversion.convert",
            "calculate_clock_angle",
        ),
        ("MathAPI",),
    ),
    # --- single-turn categories, grouped by hand ---------------------------------------------
    Server(
        "geometry",
        "Geometry: areas, perimeters and circumferences of circles, triangles, "
        "rectangles and squares, volumes of solids, distances and angles between points.",
        (
            "geometry.*",
            "geometry_circle.calculate",
            "geometry_rectangle.calculate",
            "geometry_square.calculate",
            "calculate_area",
            "calculate_triangle_area",
            "calc_area_triangle",
            "calculate_circumference",
            "calculate_circle_dimensions",
            "circle.*",
            "circle_properties.get",
            "area_circle.calculate",
            "area_rectangle.calculate",
            "rectangle.area",
            "get_area_of_square",
            "get_rectangle_property",
            "triangle_properties.get",
            "calcVolume.*",
            "math.circle_area",
            "math.triangle_area_*",
            "math.hypot",
            "math.pythagoras",
            "EuclideanDistance.calculate",
            "angleToXAxis.calculate",
        ),
    ),
    Server(
        "statistics",
        "Statistics and machine learning: probabilities (binomial, dice, cards), "
        "hypothesis tests, correlation, regression, descriptive statistics, histograms "
        "and training simple classifiers.",
        (
            "calculate_binomial_probability",
            "calc_binomial_prob",
            "prob_dist.binomial",
            "probability_of_event",
            "probability.dice_roll",
            "dice_roll_probability",
            "probabilities.calculate_single",
            "calculate_probability",
            "card_game_probability.calculate",
            "deck_of_cards.odds",
            "poker_probability.full_house",
            "t_test",
            "stats.t_test",
            "run_two_sample_ttest",
            "hypothesis_testing.*",
            "chi_squared_test",
            "confidence_interval.calculate",
            "correlation.calculate",
            "cosine_similarity.calculate",
            "statistics.*",
            "calculate_average",
            "calculate_standard_deviation",
            "random.normalvariate",
            "create_histogram",
            "linear_regression",
            "linear_regression.*",
            "linear_regression_fit",
            "run_linear_regression",
            "random_forest.train",
            "train_random_forest_classifier",
            "model.DecisionTreeClassifier",
        ),
    ),
    Server(
        "physics",
        "Physics calculators: kinematics (speed, velocity, displacement, free fall), "
        "forces, electric and magnetic fields, circuits, waves and light travel time.",
        (
            "calculate_final_velocity",
            "calculateFinalVelocity",
            "calculate_final_speed",
            "final_velocity",
            "calculate_velocity",
            "calculate_speed",
            "calculate_displacement",
            "kinematics.*",
            "calculate_electric_field",
            "calculate_electric_field_strength",
            "electromagnetic_force",
            "calculate_em_force",
            "calculate_magnetic_field",
            "calculate_magnetic_field_strength",
            "magnetic_field.calculate",
            "electromagnetism.biot_savart_law",
            "calculate_electrostatic_potential",
            "calculate_resistance",
            "calculate_voltage_difference",
            "capacitance_calculator.calculate",
            "calculate_resonant_frequency",
            "physics.*",
            "physical.calc_work",
            "light_travel_time",
            "frequency_to_wavelength",
            "calc_absolute_pressure",
            "calculate.weight_in_space",
        ),
    ),
    Server(
        "chemistry",
        "Chemistry and thermodynamics: molecular weights, boiling and melting points, "
        "gas mass, heat capacity, heating and phase-change energy, entropy changes and "
        "properties of atomic particles.",
        (
            "calculate_molecular_weight",
            "get_boiling_melting_points",
            "calculate_mass",
            "calc_heat_capacity",
            "calculate_final_temperature",
            "entropy_change.calculate",
            "calculate_entropy_change",
            "thermo.calculate_energy",
            "energy_calculator.calculate",
            "scienceFacts.*",
            "biological.calc_energy",
            "calculate_density",
        ),
    ),
    Server(
        "genomics",
        "Biology and genetics: DNA and protein sequences, mutations, genotype "
        "frequencies, cell biology facts, and evolution and population-genetics "
        "calculations.",
        (
            "analyze_dna_sequence",
            "fetch_DNA_sequence",
            "generate_DNA_sequence",
            "get_protein_sequence",
            "protein_info.get_sequence_and_3D",
            "cellbio.get_proteins",
            "cell_biology.function_lookup",
            "biology.get_cell_info",
            "mutation_type.find",
            "genetics.calculate_similarity",
            "calculate_genotype_frequency",
            "population_genetics.calculate_ne",
            "calculate_cell_density",
            "calculate_bacteria_evolution_rate",
            "calculate_fitness",
            "prediction.evolution",
            "biological.calc_biomass",
        ),
    ),
    Server(
        "ecology",
        "Ecology and environment: wildlife and species populations, forest growth, "
        "ecosystem impact, precipitation records, carbon footprint and emissions, and "
        "renewable energy potential.",
        (
            "ecology.*",
            "ecology_data.*",
            "forest_growth_forecast",
            "elephant_population_estimate",
            "wildlife_population.assess_growth",
            "animal_population.*",
            "estimate_population",
            "ecological_impact.analyze",
            "calculate_carbon_footprint",
            "calculate_emissions",
            "calculate_emission_savings",
            "calculate_vehicle_emission",
            "get_latest_carbon_intensity",
            "solarFarm.potential",
            "windFarm.potential",
            "waste_calculation.calculate",
            "identify_bird",
        ),
    ),
    Server(
        "maps",
        "Maps and navigation: directions and routes between places, driving distance "
        "and travel time, traffic conditions, geographic distance and coordinates, and "
        "nearby parking.",
        (
            "get_directions",
            "map_routing.*",
            "route_planner.*",
            "maps.*",
            "map_service.*",
            "get_shortest_driving_distance",
            "calculate_shortest_distance",
            "traffic_estimate",
            "get_traffic_info",
            "route.estimate_time",
            "city_distance.find_shortest",
            "geo_distance.calculate",
            "geodistance.find",
            "distance_calculator.calculate",
            "calc_distance",
            "calculate_distance",
            "location.get_travel_time",
            "get_coordinates_from_city",
            "parking_lot.find_nearest",
        ),
    ),
    Server(
        "finance",
        "Personal and corporate finance calculators: interest, present and future value, "
        "NPV, ROI, CAGR, mortgages and loans, financial ratios, dividends and taxes, "
        "investment projections, and currency exchange rates and conversions.",
        (
            "calculate_compound_interest",
            "calculate_compounded_interest",
            "compound_interest",
            "calc_Compound_Interest",
            "calc_Simple_Interest",
            "financial.*",
            "finance.*",
            "financials.*",
            "finance_calculator.npv",
            "calculate_NPV",
            "calculate_present_value",
            "calculate_future_value",
            "future_value",
            "calculate_mortgage_payment",
            "calculate_return_on_investment",
            "calculate_roi",
            "calculate_return_on_equity",
            "calculate_cagr",
            "calculate_discounted_cash_flow",
            "financial_ratio.*",
            "financial_ratios.*",
            "corporate_finance.calculate_YOY_growth_rate",
            "corporate_finance.revenue_forecast",
            "calculate_stock_return",
            "portfolio_future_value",
            "estimate_mutual_fund_return",
            "calculate_mutual_fund_balance",
            "investment.*",
            "stock_invest.*",
            "calculate_capital_gains_tax",
            "calculate_tax",
            "calculate_sales_tax",
            "loan_eligibility_check",
            "sales_growth.calculate",
            "bank_account.calculate_interest",
            "convert_currency",
            "currency_conversion",
            "currency_conversion.*",
            "currency_converter",
            "currency_exchange.*",
            "get_exchange_rate",
            "get_exchange_rate_with_fee",
            "latest_exchange_rate",
            "get_conversion_cost",
        ),
    ),
    Server(
        "sports",
        "Sports data: scores and results, schedules, league standings and rankings, "
        "team and player statistics and records for basketball, soccer, football, "
        "tennis, cricket and more.",
        (
            "basketball.*",
            "basketball_scores.get_scores",
            "soccer.*",
            "soccer_scores.get_scores",
            "soccer_stat.get_player_stats",
            "sports.*",
            "sports_*",
            "sport_analysis.*",
            "get_team_ranking",
            "get_team_rank",
            "get_team_score",
            "team_score.get_latest",
            "team_stats.get_top_scorer",
            "player_stats.*",
            "player_statistic",
            "get_player_record",
            "nfl_data.player_record",
            "league_stats.get_top_scorer",
            "getTopGoalScorers",
            "get_defense_ranking",
            "average_batting_score",
            "calculate_batting_average",
            "calculate_winning_percentage",
            "get_career_stats",
            "get_sport_ranking",
            "game_result.get_winner",
            "celebrity_net_worth.get",
        ),
    ),
    Server(
        "history",
        "History facts: historical events and dates, presidents, monarchs and leaders, "
        "European and US history, religions' history, and who discovered or invented "
        "what in science.",
        (
            "european_history.*",
            "euro_history.*",
            "history.*",
            "history_eu.*",
            "history_fact.fetch",
            "history_api.*",
            "us_history.*",
            "US_president.in_year",
            "US_President_During_Event",
            "get_president_and_vp",
            "historic_leader_search",
            "monarch.getMonarchOfYear",
            "GetPrimeMinisters",
            "get_event_date",
            "get_earliest_reference",
            "religion.*",
            "religion_history.*",
            "religious_history.*",
            "retrieve_religion_info",
            "get_religion_history",
            "ancient_empires.*",
            "science_history.*",
            "get_scientist_for_discovery",
            "scientist_info.*",
            "get_discoverer",
            "discoverer.get",
            "historical_contrib.*",
            "publication_year.find",
            "geology.get_era",
        ),
    ),
    Server(
        "legal",
        "Legal research: lawsuits and court cases (details, status, parties, judges), "
        "case law search, criminal records and statutes, crime rates, and finding "
        "lawyers.",
        (
            "lawsuit*",
            "court_case.*",
            "court_info.*",
            "court_records.*",
            "legal_case.*",
            "law_case*",
            "law.civil.*",
            "law_crimes.search",
            "get_lawsuit_*",
            "get_case_info",
            "find_latest_court_case",
            "fetch_law_case_details",
            "get_top_cases",
            "civil_cases.retrieve",
            "crime_record.*",
            "criminal_*",
            "get_criminal_records",
            "crime_statute_lookup",
            "get_act_details",
            "lawyer*",
            "generate_law_contract",
            "alimony_calculator.*",
            "get_crime_rate",
        ),
    ),
    Server(
        "arts",
        "Art, museums and color: artworks and sculptures (details, artists, prices), "
        "museum hours and exhibitions, custom commissions, mixing paint colors, color "
        "codes, paint quantities and interior design.",
        (
            "sculpture*",
            "get_sculpture_*",
            "sculptor_info.get",
            "artwork*",
            "art_auction.*",
            "get_artwork_price",
            "museum*",
            "get_museum_hours",
            "metropolitan_museum.*",
            "find_exhibition",
            "exhibition_info",
            "painting.create_custom",
            "mix_paint_color",
            "paint_color_mixture",
            "paint_requirement.calculate",
            "calculate_paint_needed",
            "paint_color.trends",
            "color_converter.get_color_info",
            "convert.rgb_to_hex",
            "identify_color_rgb",
            "interior_design_analysis.generate_report",
            "house_designer.design",
            "office_designer.design",
            "landscape_architect.find_specialty",
        ),
    ),
    Server(
        "games",
        "Games: video game prices, sales, reviews, updates and player counts, in-game "
        "items and player statistics, board game information and recommendations, chess "
        "ratings, poker and blackjack winners, and decks of cards.",
        (
            "video_games.*",
            "game_rewards.get",
            "game_score.highest",
            "game_scores.get",
            "game_stats.fetch_player_statistics",
            "game_list.get_games",
            "game_missions.list",
            "game_valuation",
            "game.save_progress",
            "games.*",
            "gamespot.*",
            "get_collectables_in_season",
            "get_game_item_stats",
            "get_highest_scoring_player",
            "multiplayer_game_finder",
            "player_status.check",
            "PokemonGO.*",
            "AmazonGameStore.recommend",
            "BattleReignGameAPI.*",
            "GameGuideAPI.*",
            "create_player_profile",
            "board_game*",
            "boardgame.*",
            "BoardGameGeek.*",
            "chess.*",
            "chess_club_details.find",
            "poker_game_winner",
            "card_games.*",
            "blackjack.*",
            "find_card_in_deck",
            "cards.shuffle_and_draw",
            "monopoly_odds_calculator",
            "trivia_game_search",
            "game_of_life.play",
        ),
    ),
    Server(
        "composer",
        "Musicians' tools: scales, chords and key signatures, note durations, generating "
        "melodies, chord progressions, beats and sound waves, and finding musical "
        "instruments, their prices and music stores.",
        (
            "musical_scale",
            "music_theory.*",
            "music.theory.*",
            "music.calculate_note_duration",
            "music.generate",
            "music_generator.*",
            "music_generation.*",
            "music_composer.*",
            "get_third_chord",
            "compose_melody",
            "melody_generator",
            "beat_generator",
            "note_conversion.indian",
            "audio.generate",
            "generate_sound_wave",
            "play_sound_wave",
            "detect_beats_and_filter",
            "find_instrument",
            "find_flute",
            "guitar_price.find",
            "instrument_price.get",
            "check_instrument_availability",
            "find_music_instrument_store",
            "music_shop.find_nearby",
            "get_instrument_details",
            "get_instrument_info",
        ),
    ),
    Server(
        "recipes",
        "Recipes and cooking: find recipes by dish, ingredient, diet or time, nutrition "
        "and calories of a recipe, ingredient substitutes, kitchen unit conversions and "
        "cooking times.",
        (
            "recipe*",
            "find_recipe",
            "find_recipes",
            "cookbook.*",
            "get_cooking_recipe",
            "get_recipe",
            "get_vegan_recipe",
            "cooking_conversion.convert",
            "ingredient_replace",
            "calculate_cooking_time",
        ),
    ),
    Server(
        "shopping",
        "Shopping: find supermarkets and stores, search products by category, color and "
        "size, check prices, stock and nutrition facts, order groceries (Walmart, Whole "
        "Foods, Safeway) and check order status.",
        (
            "grocery_store.*",
            "grocery_delivery.order",
            "grocery_info.nutritional_info",
            "whole_foods.*",
            "walmart.*",
            "safeway.order",
            "supermarket.find_in_city",
            "get_tesco_locations",
            "inventory_management",
            "product_search",
            "search_products",
            "get_product_details",
            "order_status_check",
        ),
    ),
    Server(
        "health",
        "Personal health: BMI, daily water intake, calories and steps, food logging, "
        "diabetes risk, and finding doctors and hospitals.",
        (
            "calculate_bmi",
            "calculate_BMI",
            "log_food",
            "calculate_daily_water_intake",
            "hydration_calculator",
            "steps_calorie_calculation",
            "diabetes_prediction",
            "doctor.search",
            "hospital.locate",
            "patient.get_mri_report",
            "fMRI.analyze",
        ),
    ),
    Server(
        "todo",
        "To-do list: add, update, complete and delete tasks and reminders.",
        ("todo", "todo_*", "todo.*", "todoIdx", "todo_manager.*", "reminders_complete"),
    ),
    Server(
        "windows",
        "Windows command prompt: run cmd commands on the user's PC (list drives and "
        "folders, start or kill programs, docker, network, date and time, shutdown).",
        ("cmd_controller.execute",),
    ),
    Server(
        "sbom",
        "Software bill of materials and vulnerability tracking (Dependency-Track): "
        "projects and versions, ACL mappings, vulnerability analyses, policy and "
        "vulnerability badges, VEX/CycloneDX export, releases.",
        (
            "acl_api.*",
            "AclApi.*",
            "project_api.*",
            "analysis_api.*",
            "badge_api.*",
            "BadgeApi.*",
            "vex_api.*",
            "releases_api.*",
        ),
    ),
    Server(
        "instana",
        "Instana observability: monitored hosts and agents, software versions, custom "
        "dashboards, alert and event configurations, Apdex reports, synthetic "
        "monitoring, website configurations, API tokens and audit logs.",
        (
            "EventSettingsApi.*",
            "CustomDashboardsApi.*",
            "SyntheticSettingsApi.*",
            "get_synthetic_*",
            "get_apdex_report",
            "delete_apdex_configuration",
            "api_token_api.*",
            "audit_log_api.*",
            "host_agent_api.*",
            "health_api.*",
            "usage_api.*",
            "website_configuration_api.*",
            "InfrastructureResourcesApi.*",
            "software_versions",
            "MaintenanceConfigurationApi.*",
            "ApplicationAnalyzeApi.*",
            "events_api.*",
            "find_infra_alert_config_versions",
            "create_global_application_alert_config",
            "get_monitoring_state",
            "get_identity_provider_patch",
            "get_website_geo_mapping_rules",
            "get_websites",
            "get_custom_dashboard",
            "get_hosts_per_month",
            "restore_mobile_app_alert_config",
        ),
    ),
    Server(
        "smarthome",
        "Smart home and IoT: control LG ThinQ air conditioners, washing machines and other "
        "appliances (modes, temperature, fan speed, on/off), and read Cisco Meraki sensor "
        "readings and alerts (temperature, humidity, doors).",
        (
            "ThinQ_Connect",
            "ControlAppliance.execute",
            "get_sensor_*",
        ),
    ),
    Server(
        "dartfx",
        "Data Artifex (DartFX) workspace: register PostgreSQL and MTNA RDS servers, list "
        "and connect to servers, open and close projects, list project files, DartFX "
        "help.",
        (
            "add_postgres_server",
            "add_mtnards_server",
            "list_servers",
            "connect_to_server",
            "dartfx_help",
            "open_project",
            "close_project",
            "list_files",
        ),
    ),
    Server(
        "portfolio",
        "Adriel's developer portfolio: his profile and contact details, projects and "
        "their status, work experience, education and tech stack.",
        (
            "*adriel*",
            "detail_experience_and_education",
            "experiences_and_education",
            "detail_project",
            "get_tech_stack",
            "list_projects",
            "contact",
        ),
    ),
    Server(
        "websearch",
        "Web and news search: search the web (DuckDuckGo and others) for up-to-date "
        "answers, and fetch the latest news on a topic or place.",
        (
            "HNA_WQA.search",
            "HNA_NEWS.search",
            "search_engine.query",
            "duck_duck_go",
            "duck_duck_go.search",
            "search_web_tool",
            "web_search",
            "get_news",
            "get_news_report",
            "news",
        ),
    ),
    Server(
        "housekeeping",
        "Home services marketplace: find housekeepers and cleaning or ironing service "
        "providers by area, rating and availability, and view their profiles.",
        (
            "get_service_providers",
            "view_service_provider_profile",
            "get_service_id",
            "getDataForProfessional",
        ),
    ),
)

NEAR_DUPLICATES: tuple[tuple[str, str], ...] = (
    ("films", "cinema"),
    ("math", "geometry"),
    ("math", "statistics"),
    ("physics", "chemistry"),
    ("finance", "trading"),
    ("finance", "payments"),
    ("restaurants", "uber"),
    ("music", "composer"),
    ("hotels", "realestate"),
    ("flights", "trains"),
    ("flights", "buses"),
    ("sightseeing", "maps"),
    ("genomics", "ecology"),
    ("windows", "files"),
    ("messaging", "twitter"),
    ("weather", "ecology"),
    ("smarthome", "vehicle"),
    ("history", "websearch"),
    ("events", "cinema"),
    ("health", "therapists"),
    ("todo", "clock"),
    ("arts", "sightseeing"),
)
"""Pairs whose requests read alike. A server in a pair is never drawn as absent: its
requests would be out of scope while near-identical ones are in scope, and such labels
measure noise, not the router."""

SAME_NAME_RULES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "calculate_density": (("population", None),),
    "calculate_distance": (("celestial", "physics"),),
}
"""BFCL reuses a few names for unrelated functions. For these, the first rule whose
keyword is in the function's description decides (None: no server); otherwise the
table does."""


def _words(text: str) -> frozenset[str]:
    """A word list written as prose, one line per group, instead of 200 quoted items."""
    return frozenset(text.split())


_ENGLISH_WORDS = _words(
    "the a an is are was were be to of and in on for with at by from about as into me my "
    "i you your we our it its this that these those what which who when where how can "
    "could would should will please find get show tell give want need like do does "
    "did have has not all any some there their them he she his her"
)
_FOREIGN_WORDS = _words(
    # Spanish, French, German, Portuguese, Italian, Indonesian function words that are
    # not English words.
    "el la los las del que y por para con una es qué cuál dónde cómo puedes quiero "
    "necesito hola le les des du est et pour avec je vous pouvez quel quelle dans sur "
    "mon ma der die das und ist ich mit für ein eine nicht wie bitte können mir os não "
    "você em meu qual il gli sono di yang dan untuk saya apa ini itu dengan tolong bisa "
    "cuanto cuánto tiempo hace zu ändere ada nya ga kak kapan stok ukuran lagi apakah masih "
    "tersedia dalam warna produk bisakah anda dari kemeja sudah belum berapa harga mau "
    "tidak"
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def is_english(text: str) -> bool:
    """Whether ``text`` reads as English.

    BFCL's live categories carry Chinese, Korean, Thai, Hindi and some Latin-script
    non-English requests; the routes' examples and rows must be English. Non-Latin
    letters mark the first kind (a few Greek symbols in a physics question are fine),
    many accented letters Vietnamese and the like, function words the rest.
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
    accented = sum(1 for c in letters if not c.isascii())
    if latin / len(letters) < 0.95 or accented / len(letters) > 0.1:
        return False
    words = [w.lower() for w in _WORD.findall(text)]
    english = sum(1 for w in words if w in _ENGLISH_WORDS)
    foreign = sum(1 for w in words if w in _FOREIGN_WORDS)
    return foreign == 0 or english > foreign


# --- reading BFCL -------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a BFCL file (JSON lines, the last line without a newline)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _user_text(messages: list[dict[str, Any]]) -> str | None:
    """The one user message of a turn (a system prompt beside it is ignored), else None."""
    users = [m for m in messages if m.get("role") == "user"]
    others = [m for m in messages if m.get("role") not in ("user", "system")]
    if len(users) != 1 or others:
        return None
    content = users[0].get("content")
    return content.strip() if isinstance(content, str) else None


_CALL_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\(")


@dataclass
class Observation:
    """One sighting of a request text: where it came from and the servers it calls."""

    source: str
    servers: frozenset[str] | None
    """None when a call goes to a function that no server claims."""


@dataclass
class Corpus:
    """Every usable request text with its sightings, and the tool docs seen."""

    sightings: dict[str, list[Observation]] = field(default_factory=lambda: defaultdict(list))
    docs: dict[str, str] = field(default_factory=dict)
    class_functions: dict[str, list[str]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    """Called functions no server claims, by the number of entries calling them."""


class FunctionMap:
    """Resolves a BFCL function name to its server, with the table's precedence rules."""

    def __init__(self, servers: Iterable[Server]) -> None:
        self._exact: dict[str, str] = {}
        self._patterns: list[tuple[str, str]] = []
        for server in servers:
            for name in server.functions:
                if any(c in name for c in "*?["):
                    self._patterns.append((name, server.name))
                elif self._exact.setdefault(name, server.name) != server.name:
                    raise ValueError(f"function {name} is claimed by two servers")

    def server(self, function: str, description: str = "") -> str | None:
        """The server owning ``function``; a name matched by two servers is a table bug."""
        for keyword, owner in SAME_NAME_RULES.get(function, ()):
            if keyword in description.lower():
                return owner
        if function in self._exact:
            return self._exact[function]
        owners = {s for pattern, s in self._patterns if fnmatchcase(function, pattern)}
        if len(owners) > 1:
            raise ValueError(f"function {function} matches servers {sorted(owners)}")
        return owners.pop() if owners else None


def _read_single_turn(data_dir: Path, fmap: FunctionMap, corpus: Corpus) -> None:
    """Single-turn categories: one request, the servers of all its ground-truth calls."""
    for category in SINGLE_TURN_FILES:
        answers = {
            row["id"]: row["ground_truth"]
            for row in _jsonl(data_dir / "possible_answer" / f"BFCL_v4_{category}.json")
        }
        for row in _jsonl(data_dir / f"BFCL_v4_{category}.json"):
            docs = {doc["name"]: doc.get("description", "") for doc in row["function"]}
            for name, description in docs.items():
                corpus.docs.setdefault(name, description)
            calls = [name for call in answers[row["id"]] for name in call]
            owners = [fmap.server(name, docs.get(name, "")) for name in calls]
            corpus.unmapped.update({n for n, o in zip(calls, owners, strict=True) if o is None})
            text = _user_text(row["question"][0]) if len(row["question"]) == 1 else None
            if text is None or not calls:
                corpus.skipped["not one user message"] += 1
                continue
            servers = None if None in owners else frozenset(o for o in owners if o)
            corpus.sightings[text].append(Observation(row["id"], servers))


def _read_multi_turn(data_dir: Path, servers: Iterable[Server], corpus: Corpus) -> None:
    """Multi-turn categories: each user turn that calls something is one request.

    A turn right after one that calls nothing (``miss_param``: the user left out a
    parameter) only supplies the missing value, so it is skipped as well.
    """
    class_server = {cls: s.name for s in servers for cls in s.classes}
    function_class: dict[str, str] = {}
    for cls, stem in CLASS_DOCS.items():
        functions: list[str] = []
        for doc in _jsonl(data_dir / "multi_turn_func_doc" / f"{stem}.json"):
            functions.append(doc["name"])
            function_class[doc["name"]] = cls
            corpus.docs.setdefault(doc["name"], doc.get("description", ""))
        corpus.class_functions[cls] = functions
    for category in MULTI_TURN_FILES:
        answers = {
            row["id"]: row["ground_truth"]
            for row in _jsonl(data_dir / "possible_answer" / f"BFCL_v4_{category}.json")
        }
        for row in _jsonl(data_dir / f"BFCL_v4_{category}.json"):
            withheld = False
            for index, (turn, calls) in enumerate(
                zip(row["question"], answers[row["id"]], strict=True)
            ):
                text = _user_text(turn) if turn else None
                answers_withheld, withheld = withheld, text is not None and not calls
                if answers_withheld and text is not None:
                    # The reply to a turn whose parameter BFCL withheld ("The file name
                    # is report.txt"): a fragment of that turn, not a request.
                    corpus.skipped["clarification turn"] += 1
                    continue
                if text is None or not calls:
                    continue
                called = {m.group(1) for m in map(_CALL_NAME.match, calls) if m}
                owners = {class_server.get(function_class.get(n, ""), "") for n in called}
                labels = None if "" in owners or not owners else frozenset(owners)
                corpus.sightings[text].append(Observation(f"{row['id']}#{index}", labels))


def read_corpus(data_dir: Path) -> Corpus:
    """Every request of the BFCL categories this benchmark uses, with its servers."""
    corpus = Corpus()
    _read_single_turn(data_dir, FunctionMap(SERVERS), corpus)
    _read_multi_turn(data_dir, SERVERS, corpus)
    return corpus


# --- labelling and splitting ---------------------------------------------------------------


@dataclass
class Labelled:
    """Request texts by label: single-server requests and multi-server requests."""

    single: dict[str, list[str]]
    multi: dict[str, frozenset[str]]
    dropped: Counter[str]
    long_multi: int = 0
    """Multi-server texts dropped for their length (most of BFCL's are long)."""


def label(corpus: Corpus) -> Labelled:
    """One label per distinct text; texts that disagree across sightings are dropped.

    The same text occurs in several BFCL files (multi-turn variants repeat their turns,
    live categories repeat requests); it counts once. Where its sightings name different
    servers (a short reply like "Yes, please." after different turns) the text says
    nothing about a server on its own, so it is dropped.
    """
    single: dict[str, list[str]] = defaultdict(list)
    multi: dict[str, frozenset[str]] = {}
    dropped: Counter[str] = Counter()
    long_multi = 0
    for text in sorted(corpus.sightings):
        labels = {o.servers for o in corpus.sightings[text]}
        if len(labels) > 1:
            dropped["conflicting labels"] += 1
            continue
        servers = labels.pop()
        if servers is None:
            dropped["calls a function no server claims"] += 1
        elif len(text) > MAX_CHARS:
            dropped[f"longer than {MAX_CHARS} characters"] += 1
            long_multi += len(servers) > 1
        elif not is_english(text):
            dropped["not English"] += 1
        elif len(servers) == 1:
            single[next(iter(servers))].append(text)
        else:
            multi[text] = servers
    return Labelled(dict(single), multi, dropped, long_multi)


def _shuffled(items: Iterable[str], seed: int, salt: str) -> list[str]:
    """A seeded shuffle of ``items`` that does not depend on their incoming order."""
    ordered = sorted(items)
    random.Random(f"{seed}:{salt}").shuffle(ordered)  # noqa: S311 - a split, not a secret
    return ordered


def pick_absent(names: list[str], seed: int) -> list[str]:
    """The servers left out of the table: drawn with the seed among those that have no
    near-duplicate, so out-of-scope rows are never look-alikes of in-scope ones."""
    paired = {name for pair in NEAR_DUPLICATES for name in pair}
    candidates = sorted(n for n in names if n not in paired)
    absent = max(0, len(names) - TABLE_SIZE)
    if absent > len(candidates):
        raise ValueError(f"{absent} absent servers needed, only {len(candidates)} eligible")
    return sorted(random.Random(seed).sample(candidates, absent))  # noqa: S311 - a split


@dataclass
class Splits:
    """The benchmark's rows: example pools per route and the dev/test rows."""

    table: list[str]
    absent: list[str]
    pools: dict[str, list[str]]
    dev: list[dict[str, Any]]
    test: list[dict[str, Any]]


def _halves(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """First half to dev, the rest (the larger half when odd) to test."""
    cut = len(rows) // 2
    return rows[:cut], rows[cut:]


def _pool(texts: list[str]) -> tuple[list[str], list[str]]:
    """Split a route's shuffled requests into its example pool and evaluation requests.

    The pool starts with the route's examples: the first 10 requests short enough to be
    RouteTable examples. It keeps up to 15, but never so many that fewer than 10 remain
    for evaluation, so small servers still get dev/test rows.
    """
    examples = [t for t in texts if len(t) <= EXAMPLE_MAX_CHARS][:EXAMPLES_PER_ROUTE]
    rest = [t for t in texts if t not in examples]
    size = min(POOL_MAX, max(EXAMPLES_PER_ROUTE, len(texts) - 10))
    extra = size - len(examples)
    return examples + rest[:extra], rest[extra:]


def split(labelled: Labelled, seed: int) -> Splits:
    """Table/absent servers, example pools and the dev/test rows, all seeded.

    Multi-step rows are the requests whose calls reach two or more table servers; one
    that also reaches an absent server still needs several servers, so it stays, with
    its absent servers named apart.
    """
    names = sorted(labelled.single)
    absent = pick_absent(names, seed)
    table = [n for n in names if n not in absent]
    pools: dict[str, list[str]] = {}
    dev: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for name in table:
        pools[name], rest = _pool(_shuffled(labelled.single[name], seed, name))
        d, t = _halves([{"text": x, "route": name, "kind": "in_scope"} for x in rest])
        dev += d
        test += t
    for name in absent:
        texts = _shuffled(labelled.single[name], seed, name)
        rows = [
            {"text": x, "route": ESCALATE, "kind": "out_of_scope", "server": name} for x in texts
        ]
        d, t = _halves(rows)
        dev += d
        test += t
    in_table = set(table)
    multi = [x for x, s in labelled.multi.items() if len(s & in_table) >= 2]
    rows = []
    for text in _shuffled(multi, seed, "multi_step"):
        servers = labelled.multi[text]
        row: dict[str, Any] = {"text": text, "route": ESCALATE, "kind": "multi_step"}
        row["routes"] = sorted(servers & in_table)
        if servers - in_table:
            row["absent"] = sorted(servers - in_table)
        rows.append(row)
    d, t = _halves(rows)
    dev += d
    test += t
    return Splits(table, absent, pools, _mixed(dev, seed, "dev"), _mixed(test, seed, "test"))


def _mixed(rows: list[dict[str, Any]], seed: int, salt: str) -> list[dict[str, Any]]:
    """Rows in a seeded order, so a file read top-down is not grouped by route."""
    order = _shuffled([r["text"] for r in rows], seed, salt)
    by_text = {r["text"]: r for r in rows}
    return [by_text[t] for t in order]


# --- writing ------------------------------------------------------------------------------


def _server_tools(server: Server, corpus: Corpus, fmap: FunctionMap) -> list[dict[str, str]]:
    """The server's tools: its classes' functions and every documented function it claims."""
    names: dict[str, str] = {}
    for cls in server.classes:
        for name in corpus.class_functions.get(cls, []):
            names.setdefault(name, corpus.docs.get(name, ""))
    for name in sorted(corpus.docs):
        if name not in names and fmap.server(name, corpus.docs[name]) == server.name:
            names[name] = corpus.docs[name]
    return [{"name": n, "description": d} for n, d in names.items()]


def _yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def render_routetable(splits: Splits) -> str:
    """The RouteTable manifest of the table servers, written by hand (no PyYAML here)."""
    by_name = {s.name: s for s in SERVERS}
    lines = [
        f"# Generated by bench/tooldata.py from {SOURCE_PACKAGE}=={SOURCE_VERSION} "
        f"({SOURCE_LICENSE}). Do not edit by hand.",
        "apiVersion: routermesh.io/v1alpha1",
        "kind: RouteTable",
        "metadata:",
        f"  name: {MESH}",
        "  labels:",
        f"    routermesh.io/mesh: {MESH}",
        "spec:",
        "  routes:",
    ]
    for name in splits.table:
        lines.append(f"    - name: {name}")
        lines.append("      description: >-")
        lines += [f"        {w}" for w in textwrap.wrap(by_name[name].description, 84)]
        lines.append("      examples:")
        lines += [f"        - {_yaml_str(t)}" for t in splits.pools[name][:EXAMPLES_PER_ROUTE]]
        lines.append("      target:")
        lines.append(f"        url: {TARGET.format(name=name)}")
    return "\n".join(lines) + "\n"


def _jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _count_table(splits: Splits) -> list[str]:
    """Markdown rows: requests per split and kind."""
    lines = ["| split | in_scope | out_of_scope | multi_step | total |", "|---|---|---|---|---|"]
    train = sum(len(p) for p in splits.pools.values())
    lines.append(f"| train (example pools) | {train} | 0 | 0 | {train} |")
    for split_name, rows in (("dev", splits.dev), ("test", splits.test)):
        kinds = Counter(r["kind"] for r in rows)
        lines.append(
            f"| {split_name} | {kinds['in_scope']} | {kinds['out_of_scope']} | "
            f"{kinds['multi_step']} | {len(rows)} |"
        )
    return lines


def _bullets(counts: Counter[str]) -> str:
    """An indented Markdown list of ``reason: count``."""
    return "\n".join(f"   - {k}: {v}" for k, v in sorted(counts.items()))


def render_readme(splits: Splits, labelled: Labelled, corpus: Corpus, seed: int) -> str:
    """The dataset card: source, license, method, counts and known noise."""
    server_rows = ["| server | in table | single-server requests |", "|---|---|---|"]
    for name in sorted(labelled.single):
        where = "yes" if name in splits.table else "no (absent)"
        server_rows.append(f"| {name} | {where} | {len(labelled.single[name])} |")
    multi_rows = [r for r in splits.dev + splits.test if r["kind"] == "multi_step"]
    with_absent = sum(1 for r in multi_rows if "absent" in r)
    unmapped = ", ".join(f"`{n}`" for n, _ in corpus.unmapped.most_common(12))
    sources = "\n".join(f"   - `BFCL_v4_{c}.json`" for c in SINGLE_TURN_FILES + MULTI_TURN_FILES)
    return f"""# bench/data/tools

A tool-routing benchmark for router-mesh: {len(labelled.single)} tool servers (MCP
servers) built from the Berkeley Function-Calling Leaderboard (BFCL). {len(splits.table)}
of them are the routes of `routetable.yaml`; {len(splits.absent)} are left out, so that
their requests are out of scope.

## Source and license

- Data: the `bfcl_eval/data` folder of the PyPI package
  `{SOURCE_PACKAGE}=={SOURCE_VERSION}` (Berkeley Function-Calling Leaderboard, Gorilla
  project, UC Berkeley; https://github.com/ShishirPatil/gorilla).
- License: {SOURCE_LICENSE}. The wheel's METADATA says `License: Apache 2.0` and the
  data README's front matter says `license: apache-2.0`; the wheel ships no separate
  LICENSE file.
- Request texts are BFCL's, unchanged except for trimming leading and trailing white
  space. Route names and descriptions are written for this benchmark (from the
  functions' docs, not copied from them).

## How it was built

`python -m routermesh_bench.tooldata --data <bfcl_eval/data> --out <dir> --seed {seed}`
(`bench/tooldata.py`, standard library only; the same inputs give the same bytes).

1. Every BFCL function is mapped to one server by the explicit table `SERVERS` in
   `bench/tooldata.py`: exact names and `fnmatch` patterns, and the multi-turn API
   classes as whole servers. Schema-Guided-Dialogue functions are grouped by domain
   (`Hotels_2_*` and `Hotels_4_*` are `hotels`). Where BFCL uses one name for unrelated
   functions, `SAME_NAME_RULES` decides by the function's description.
2. Requests come from the single-turn categories (one request per entry; a system
   prompt beside the user message is ignored) and from the multi-turn ones (each user
   turn whose ground truth calls something; its servers are those of the API classes of
   the called functions):
{sources}

   A request's servers are the servers of all of its ground-truth calls. The Java and
   JavaScript categories are not used.
3. Each distinct text counts once (the multi-turn variants repeat most turns). Skipped
   before that:
{_bullets(corpus.skipped)}

   ("clarification turn": in `multi_turn_miss_param` the user's reply after a turn whose
   parameter BFCL withheld, such as "The file name is report.txt".) Then dropped:
{_bullets(labelled.dropped)}
4. {len(splits.table)} servers are in the table; the {len(splits.absent)} absent ones are drawn
   with seed {seed} among the servers that have no near-duplicate (`NEAR_DUPLICATES`), so
   an out-of-scope request never reads like a table route's.
5. Per table server, a seeded shuffle: the first {EXAMPLES_PER_ROUTE} requests of at most
   {EXAMPLE_MAX_CHARS} characters (the RouteTable CRD's limit) are the route's examples in
   `routetable.yaml`; `train.jsonl` holds the example pool, those plus the next ones up
   to {POOL_MAX}, but never so many that fewer than 10 are left for evaluation (so small
   servers keep dev/test rows). The rest is split half into `dev.jsonl`, half into
   `test.jsonl` (the odd one to test). Absent servers' requests are `out_of_scope`
   rows, split the same way.
6. `multi_step` rows are requests whose ground truth calls functions of two or more
   different table servers. They are natural BFCL requests, none synthesized. BFCL has
   {len(labelled.multi)} usable multi-server texts ({labelled.long_multi} more are longer
   than {MAX_CHARS} characters); {len(multi_rows)} of them reach two or more table
   servers, {with_absent} of which also reach an absent server (listed in `absent`).

## Files

- `routetable.yaml`: the RouteTable (`metadata.name: {MESH}`, label
  `routermesh.io/mesh: {MESH}`), one route per table server: description,
  {EXAMPLES_PER_ROUTE} examples, target `http://NAME-mcp.tools.svc:8000/mcp`.
- `servers.json`: every server: name, description, `in_table`, number of single-server
  requests, tools (BFCL names and descriptions, for reference).
- `train.jsonl`: the table routes' example pools, `{{"text", "route"}}`.
- `dev.jsonl`, `test.jsonl`: `{{"text", "route", "kind"}}`; kind `in_scope` (route: the
  server), `out_of_scope` (route `{ESCALATE}`, `server`: the absent server) or
  `multi_step` (route `{ESCALATE}`, `routes`: the table servers it needs).

## Counts

{chr(10).join(_count_table(splits))}

{chr(10).join(server_rows)}

## Grouping decisions

- `Movies_1` (theaters, showtimes, tickets) is `cinema`; `Movies_3` (find movies by
  director, genre, cast) and `Media_3` (find and stream movies online) are `films`:
  `Movies_3` requests read exactly like `Media_3`'s, not like `Movies_1`'s.
- `Hotels_2` (house rentals) and `Hotels_4` (hotels) are one `hotels` server; `Homes_2`
  (homes to rent or buy) is `realestate`. `Services_1` (hair salons) is `salons`,
  `Services_4` (therapists) is `therapists`. `Alarm_1` joins the time functions in
  `clock`; `RideSharing_2`, `uber.ride` and `uber.eat.order` are `uber`.
- `TravelAPI` (flights, credit cards, insurance, budget) and the flight functions are
  `flights`; `TradingBot` and the stock-quote functions are `trading`; `MathAPI` and the
  arithmetic/algebra/calculus functions are `math`.
- Small groups were merged where one server would plausibly expose both: board games
  into `games`, instrument shops into `composer`, clothing-store support into `shopping`,
  Meraki sensors into `smarthome`, paint and interior design into `arts`, currency
  exchange into `finance`. Groups too small for a server (translation, library books,
  psychology tests, census data) and functions that fit no server are left unmapped:
  {len(corpus.unmapped)} functions, called by {sum(corpus.unmapped.values())} entries;
  the most called: {unmapped}.
- `version_api.VersionApi.get_version` ("What is the version?") is left unmapped: its
  requests name no product, and one of them asks about Instana.

## Known noise

- Multi-turn turns lean on their conversation ("What's inside?", "Finally, show the
  last 20 lines the file."): read alone, some name no server, and some mention another
  server's topic that the turn does not call (a helpdesk ticket about a trading issue).
- BFCL requests are often synthetic and formulaic: the SGD-derived live requests follow
  a few templates per domain, the `simple_python` ones read like textbook exercises.
- Labels come from the ground-truth calls, not from the wording: where the two
  disagree, the calls decide.
- Neighbouring servers share vocabulary: `films` vs `cinema`, `math` vs `geometry` vs
  `statistics`, `finance` vs `trading` vs `payments`, `physics` vs `chemistry`,
  `weather` vs `ecology`. All of these stay in the table.
"""


def _servers_json(splits: Splits, labelled: Labelled, corpus: Corpus) -> str:
    fmap = FunctionMap(SERVERS)
    rows = [
        {
            "name": s.name,
            "description": s.description,
            "in_table": s.name in splits.table,
            "requests": len(labelled.single.get(s.name, [])),
            "tools": _server_tools(s, corpus, fmap),
        }
        for s in sorted(SERVERS, key=lambda s: s.name)
        if s.name in labelled.single
    ]
    return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"


def check_names(names: Iterable[str]) -> None:
    """Route names are DNS labels with distinct first words, none a prefix of another,
    and none a word the router reserves for escalation."""
    reserved = {"none", "several", "cortex", "escalate"}
    names = sorted(names)
    label_re = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    firsts = [n.split("-")[0] for n in names]
    for name in names:
        if not label_re.match(name) or len(name) > 63 or name in reserved:
            raise ValueError(f"bad route name {name!r}")
        if any(o != name and o.startswith(name) for o in names):
            raise ValueError(f"route name {name!r} is a prefix of another")
    if len(set(firsts)) != len(firsts):
        raise ValueError("route names must have distinct first words")


def build(data_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Build the benchmark from BFCL's data directory into ``out_dir``; returns counts."""
    check_names(s.name for s in SERVERS)
    corpus = read_corpus(data_dir)
    labelled = label(corpus)
    splits = split(labelled, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "routetable.yaml": render_routetable(splits),
        "servers.json": _servers_json(splits, labelled, corpus),
        "train.jsonl": _jsonl_text(
            {"text": t, "route": name} for name in splits.table for t in splits.pools[name]
        ),
        "dev.jsonl": _jsonl_text(splits.dev),
        "test.jsonl": _jsonl_text(splits.test),
        "README.md": render_readme(splits, labelled, corpus, seed),
    }
    for name, content in files.items():
        (out_dir / name).write_text(content, encoding="utf-8")
    return {
        "servers": {n: len(t) for n, t in sorted(labelled.single.items())},
        "table": splits.table,
        "absent": splits.absent,
        "train": sum(len(p) for p in splits.pools.values()),
        "dev": dict(Counter(r["kind"] for r in splits.dev)),
        "test": dict(Counter(r["kind"] for r in splits.test)),
        "multi_step_candidates": len(labelled.multi),
        "dropped": dict(labelled.dropped),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: build the benchmark and print its counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="bfcl_eval/data directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = build(args.data, args.out, args.seed)
    print(json.dumps(summary, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
